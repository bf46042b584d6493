"""How much of a HalfCheetah task one reward gives away: the target read back from a single step.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/task_identifiability.py [--tasks 100] [--steps 3] [--seed 0]

For the fixed test tasks of ``HalfCheetahVel`` and ``HalfCheetahDir`` (``eval_tasks``, the tasks every
comparison tests on), each cheetah starts from its reset and takes uniform random actions in [-1, 1]^6.
After step ``t`` the script inverts that step's reward with what an agent sees: its forward velocity
``v`` in the observation (index 8, ``qvel[0]``) and the control cost ``0.05 ||a||^2`` of its own action.

* goal velocity, reward ``-|v_x - v_goal| - ctrl``: the estimate ``v + (-r - ctrl)``, exact where the
  cheetah is slower than its target and ``v`` equals the simulator's ``v_x``. Printed: its correlation with
  the target and its median and largest error (m/s).
* forward/backward, reward ``d v_x - ctrl``: the estimate ``sign((r + ctrl) v)``. Printed: the share of
  tasks whose direction it gets right.

A memory agent reads the same numbers, so where one step identifies the task, whatever a trial's later
episodes could add over its first is bounded by the first few steps of that episode (docs/ROBOT.md,
"What one reward gives away").
"""

from __future__ import annotations

import argparse

import torch


def _first_steps(family, tasks: int, steps: int, seed: int):
    """``(task, [(action, forward velocity, reward)] per step)``: the fixed test tasks of ``family`` from their
    reset, under uniform random actions in ``[-1, 1]^6`` (seeded with ``seed + 1``)."""
    from rnnmeta.rl.mujoco import HALF_CHEETAH_FORWARD_VELOCITY
    from rnnmeta.rl.trial import eval_tasks

    task = eval_tasks(family, tasks, seed)
    played = []
    try:
        env = family.make(task, torch.Generator().manual_seed(seed))
        env.reset()
        actions = torch.Generator().manual_seed(seed + 1)
        for _ in range(steps):
            action = torch.rand(tasks, 6, generator=actions) * 2 - 1
            obs, reward, _ = env.step(action)
            played.append((action, obs[:, HALF_CHEETAH_FORWARD_VELOCITY], reward))
    finally:
        family.close()
    return task, played


def _velocity_rows(tasks: int, steps: int, seed: int) -> list[str]:
    from rnnmeta.rl.mujoco import HalfCheetahVel

    task, played = _first_steps(HalfCheetahVel(horizon=200, low=0.0, high=2.0), tasks, steps, seed)
    target = task["velocity"].float()
    rows = []
    for t, (action, velocity, reward) in enumerate(played, start=1):
        estimate = velocity + (-reward - 0.05 * action.pow(2).sum(-1))
        error = (estimate - target).abs()
        corr = float(torch.corrcoef(torch.stack([estimate, target]))[0, 1])
        rows.append(f"| HalfCheetahVel | {t} | corr {corr:.3f}, median error {float(error.median()):.3f} m/s, "
                    f"largest {float(error.max()):.2f} m/s |")
    return rows


def _direction_rows(tasks: int, steps: int, seed: int) -> list[str]:
    from rnnmeta.rl.mujoco import HalfCheetahDir

    task, played = _first_steps(HalfCheetahDir(horizon=200), tasks, steps, seed)
    direction = torch.sign(task["direction"].float())
    rows = []
    for t, (action, velocity, reward) in enumerate(played, start=1):
        estimate = torch.sign((reward + 0.05 * action.pow(2).sum(-1)) * velocity)
        right = float((estimate == direction).float().mean())
        rows.append(f"| HalfCheetahDir | {t} | direction right for {right:.0%} of tasks "
                    f"(median speed {float(velocity.abs().median()):.2f} m/s) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100, help="fixed test tasks per family (eval_tasks)")
    parser.add_argument("--steps", type=int, default=3, help="steps after the reset, each read on its own")
    parser.add_argument("--seed", type=int, default=0, help="eval_seed of the tasks; the actions use seed + 1")
    args = parser.parse_args()
    if args.tasks < 2 or args.steps < 1:
        parser.error(f"--tasks must be >= 2 and --steps >= 1, got {args.tasks} and {args.steps}")
    torch.set_num_threads(1)
    print("| family | step | the task read back from that step's reward alone |")
    print("|---|---|---|")
    for row in _velocity_rows(args.tasks, args.steps, args.seed) + _direction_rows(args.tasks, args.steps, args.seed):
        print(row)


if __name__ == "__main__":
    main()
