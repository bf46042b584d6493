"""Environment throughput of the robot-control families (issue 16): steps per second, sync vs async vectors.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_robot.py [--steps 400] [--batch 1 8 32] [--agents]

For each family and batch size ``B`` it times ``steps`` batched steps of uniformly random actions
(through :class:`~rnnmeta.rl.gym_family.GymBatchedEnv`, so the torch <-> numpy conversion and the
absorbing-state bookkeeping are included) and prints environment steps per second (``B * steps / s``)
and CPU seconds per 1,000 environment steps of this process (the async workers' CPU is not counted
there: compare wall time). With ``--agents`` it also times the agents' acting loop (a random actor, RL2's GRU and
SNAILAgent) through :func:`rnnmeta.rl.trial.run_trials` on the same families, to show whether the
simulator or the network is the bottleneck. The machine is named in the output; the numbers depend on
it and on its load (printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"


def time_env(family, batch: int, steps: int, seed: int = 0) -> tuple[float, float]:
    """``(env steps per second, CPU seconds of this process per 1,000 env steps)``."""
    from rnnmeta.rl.base import seeded_generator

    g = seeded_generator(seed, "bench")
    env = family.make(family.sample_tasks(batch, g), g)
    env.reset()
    shape = family.action_space.shape
    actions = torch.rand(steps, batch, *shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    env.step(actions[0])  # warm-up (async workers' first step)
    w0, c0 = time.perf_counter(), time.process_time()
    for t in range(steps):
        _, _, done = env.step(actions[t])
        if t % family.horizon == family.horizon - 1:
            env.reset()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return batch * steps / wall, 1e6 * cpu / (batch * steps)


def time_acting(agent_or_actor, family, batch: int, episodes: int, seed: int = 0) -> tuple[float, float]:
    """``(env steps per wall second, per CPU second of this process)`` of ``run_trials`` (acting + stepping)."""
    from rnnmeta.rl.base import seeded_generator
    from rnnmeta.rl.trial import run_trials

    tasks = family.sample_tasks(batch, seeded_generator(seed, "tasks"))
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        run_trials(agent_or_actor, family, tasks, episodes, seeded_generator(seed, "env"), seeded_generator(seed, "actor"))
    n = batch * episodes * family.horizon
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="batched steps timed per family and batch size")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32], help="copies stepped together")
    p.add_argument("--families", nargs="+", default=["point2d", "cheetah_vel", "ant_dir"])
    p.add_argument("--agents", action="store_true", help="also time the acting loop of a random actor, RL2 and SNAILAgent")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"machine: {machine()}")

    from rnnmeta.rl.navigation import PointNavigation2D

    def build(name: str, mode: str):
        if name == "point2d":
            return PointNavigation2D()
        from rnnmeta.rl.mujoco import AntDir, HalfCheetahVel

        return {"cheetah_vel": HalfCheetahVel, "ant_dir": AntDir}[name](vectorization=mode)

    print("| family | vector | B | env steps per wall s | CPU ms per 1k steps (this process; async workers not counted) |")
    print("|---|---|---|---|---|")
    for name in args.families:
        modes = ["torch"] if name == "point2d" else ["sync", "async"]
        for mode in modes:
            for b in args.batch:
                fam = build(name, mode)
                sps, cpu = time_env(fam, b, args.steps)
                print(f"| {name} | {mode} | {b} | {sps:,.0f} | {cpu:.1f} |", flush=True)
                if hasattr(fam, "close"):
                    fam.close()

    if args.agents:
        from rnnmeta.rl.classical import RandomActor
        from rnnmeta.rl.rl2 import RL2

        from rnnmeta.rl.snail_agent import SNAILAgent

        print("\n| family | actor | B | env steps per wall s (acting + stepping, run_trials) | per CPU s |")
        print("|---|---|---|---|---|")
        for name in args.families:
            fam = build(name, "sync")
            # (label, actor, episodes a trial): SNAILAgent's step attends over the trial so far, so it plays the
            # two-episode trials of configs/compare/cheetah_vel.yaml, with that config's layout
            snail = SNAILAgent(fam, n_episodes=2, layout=["tc:32", "tc:32", "attn:32:32"], embed_size=32)
            actors = (("random", RandomActor(), 1), ("RL2 GRU-256", RL2(fam, n_episodes=1).actor(), 1),
                      ("SNAILAgent tc:32 tc:32 attn:32:32, 2-episode trials", snail.actor(), 2))
            for label, actor, episodes in actors:
                for b in args.batch:
                    wall, cpu = time_acting(actor, fam, b, episodes)
                    print(f"| {name} | {label} | {b} | {wall:,.0f} | {cpu:,.0f} |", flush=True)
            if hasattr(fam, "close"):
                fam.close()


if __name__ == "__main__":
    main()
