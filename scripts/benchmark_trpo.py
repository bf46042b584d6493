"""What one outer step of MAMLRL costs with TRPO against PPO, on the agent of a robot comparison config.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_trpo.py [--config configs/compare/point2d_maml_trpo.yaml] [--repeats 3]

Builds the config's ``maml`` agent, collects one training batch, then times (process CPU seconds, median of
``--repeats``, one torch thread): the batch's collection; one TRPO step (``rnnmeta.rl.TRPO``, the config's
settings) and, within it, the conjugate-gradient solve (its Fisher-vector products through the inner steps);
one PPO epoch on the same batch (the outer loss's forward and backward; PPO makes ``ppo_epochs`` of them,
default 4). Each TRPO step starts from the same parameters. Prints a Markdown table and the CPU.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "compare" / "point2d_maml_trpo.yaml"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, str(REPO / "scripts"))
    from robot_compare import build_agent

    import rnnmeta.rl.trpo as trpo
    from rnnmeta.compare.runner import cpu_name

    cfg = yaml.safe_load(Path(args.config).read_text())
    torch.manual_seed(0)
    agent = build_agent(cfg["learners"]["maml"]["model"], cfg["family"])
    if not agent.uses_trpo:
        sys.exit(f"{args.config}: its maml agent does not use rnnmeta.rl.TRPO")
    start = time.process_time()
    batch = agent.collect(0)
    collect = time.process_time() - start
    theta = copy.deepcopy(agent.state_dict())
    solve_times, step_times, ppo_times = [], [], []
    solve = trpo.conjugate_gradient

    def timed_solve(*a, **k):
        t = time.process_time()
        out = solve(*a, **k)
        solve_times.append(time.process_time() - t)
        return out

    trpo.conjugate_gradient = timed_solve
    optimizer = agent.configure_optimizers()
    for _ in range(args.repeats):
        agent.load_state_dict(theta)
        reference: dict = {}
        t = time.process_time()
        optimizer.step(lambda: agent.trpo_objective(batch, reference))
        step_times.append(time.process_time() - t)
        t = time.process_time()
        agent.zero_grad()
        agent.outer_loss(batch).backward()
        ppo_times.append(time.process_time() - t)
    trpo.conjugate_gradient = solve
    group = optimizer.param_groups[0]
    print(f"\nMAMLRL of {args.config}: {agent.inner_steps} inner steps, {agent.batch_trials} trials of "
          f"{agent.train_trial_len} steps; TRPO with {group['cg_iters']} conjugate-gradient iterations; CPU s, median of {args.repeats}\n")
    print("| collect one batch | one TRPO step | of which the conjugate-gradient solve | one PPO epoch | PPO's epochs per batch |")
    print("|---|---|---|---|---|")
    print(f"| {collect:.2f} | {statistics.median(step_times):.2f} | {statistics.median(solve_times):.2f} | "
          f"{statistics.median(ppo_times):.2f} | {agent.ppo_epochs} |")
    print(f"\nCPU: {cpu_name()}; torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
