"""Rollout throughput of rnnmeta.rl: environment steps per second of the batched families, of each agent's
acting loop, and the environment's share of a training iteration (issue 15: it must stay under 10 %).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_rl.py [--trials 64] [--repeats 3]

Times are process CPU seconds (``time.process_time``: the same work reads the same on a busy machine),
median of ``--repeats``; one torch thread unless ``--threads``. Prints a Markdown table and the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def _cpu_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def env_steps_per_second(family, trials: int, steps: int, repeats: int) -> float:
    """Steps of ``trials`` environments at once, uniform random actions drawn beforehand, per CPU second."""
    from rnnmeta.rl import seeded_generator

    tasks = family.sample_tasks(trials, seeded_generator(0, "bench"))
    actions = torch.randint(0, family.action_space.n, (steps, trials), generator=seeded_generator(0, "a"))

    def run():
        env = family.make(tasks, seeded_generator(0, "env"))
        env.reset()
        for t in range(steps):
            if t % family.horizon == 0:
                env.reset()
            env.step(actions[t])

    return trials * steps / _cpu_time(run, repeats)


def main() -> None:
    from rnnmeta.compare.runner import cpu_name
    from rnnmeta.rl import MAMLRL, RL2, BernoulliBandits, SNAILAgent, TabularMDPs, run_trials, seeded_generator

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64, help="trials stepped at once (an agent's batch_trials)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--robot", action="store_true",
                        help="then the robot-control families (issue 16): scripts/benchmark_robot.py, sync vs async MuJoCo vectors")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = [("bandits K=5, N=100", BernoulliBandits(5), 100), ("MDP S=10 A=5 H=10, N=10", TabularMDPs(), 10)]
    agents = {
        "RL2 (GRU 256)": lambda fam, n: RL2(fam, n, batch_trials=args.trials),
        "SNAILAgent": lambda fam, n: SNAILAgent(fam, n, batch_trials=args.trials),
        "MAMLRL (2x100)": lambda fam, n: MAMLRL(fam, n, batch_trials=args.trials),
    }
    rows = []
    for label, fam, n in settings:
        steps = n * fam.horizon
        env_sps = env_steps_per_second(fam, args.trials, steps, args.repeats)
        big = env_steps_per_second(fam, 4096, steps, 1)
        rows.append((label, "environment alone", f"{env_sps:,.0f}", f"{big:,.0f} (4,096 trials)", "-"))
        tasks = fam.sample_tasks(args.trials, seeded_generator(0, "bench"))
        for name, make in agents.items():
            torch.manual_seed(0)
            agent = make(fam, n)
            actor = agent.actor()

            def act(agent=agent, actor=actor):
                with torch.no_grad():
                    run_trials(actor, fam, tasks, n, seeded_generator(0, "e"), seeded_generator(0, "a"))

            act_sps = args.trials * steps / _cpu_time(act, args.repeats)
            opt = torch.optim.Adam(agent.parameters(), lr=1e-3)
            updates = getattr(agent, "updates_per_iteration", getattr(agent, "ppo_epochs", 1))

            def iteration(agent=agent, opt=opt, updates=updates):
                # one training iteration as in training_step: collect, then `updates` gradient steps
                batch = agent.collect(0)
                for _ in range(updates):
                    loss = agent.ppo_loss(batch)[0] if hasattr(agent, "ppo_loss") else agent.outer_loss(batch)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            it = _cpu_time(iteration, args.repeats)
            env_share = args.trials * steps / env_sps / it
            rows.append((label, name, f"{act_sps:,.0f}", f"{it:.3f} s per iteration ({updates} updates)", f"{100 * env_share:.1f} %"))
    print(f"CPU: {cpu_name()}, torch threads {args.threads}, {args.trials} trials at once, median of {args.repeats}, "
          f"process CPU time; load average {os.getloadavg()[0]:.1f}")
    print()
    print("| setting | what | steps per CPU second | training | environment's share of an iteration |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.robot:  # robot control (2D navigation, MuJoCo through gymnasium.vector): its own script and table
        import subprocess
        import sys

        print()
        subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_robot.py"),
                        "--batch", "1", "8", str(args.trials), "--agents"], check=True)


if __name__ == "__main__":
    main()
