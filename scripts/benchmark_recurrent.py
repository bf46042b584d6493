"""The black-box recurrent learners (LSTMLearner, MANN) on Omniglot 5-way and 20-way 1-shot and sinusoid K = 5 and K = 10.

Runs the shipped comparisons (``configs/compare/omniglot_5w1s.yaml``, ``omniglot_20w1s.yaml``, ``sinusoid.yaml``,
``sinusoid_k10.yaml``) restricted to ``--learners`` (add ``maml`` for the gradient-based row of
the same runs) through :func:`rnnmeta.compare.compare`: the same task streams, fixed test episodes
and logging as ``rnnmeta compare``, with each config's own budget unless ``--steps`` replaces it.
Prints one table of test metrics; each comparison's tables, costs and plots are in
``<output-dir>/<name>/``.

Run:  python scripts/benchmark_recurrent.py                                   # the configs' budgets
      python scripts/benchmark_recurrent.py --steps 2 --test-episodes 20 --val-episodes 10   # smoke test
      python scripts/benchmark_recurrent.py --learners mann --tasks omniglot_5w1s --steps 2000
      python scripts/benchmark_recurrent.py --learners lstm mann --tasks omniglot_5w1s --cpu-minutes 24   # the goal budget
"""

from __future__ import annotations

import argparse

from comparison_config import REPO, load, narrowed

TASKS = ("omniglot_5w1s", "omniglot_20w1s", "sinusoid", "sinusoid_k10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=["lstm", "mann"], help="learner names of the configs")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="comparison configs to run")
    parser.add_argument("--steps", type=int, default=None, help="meta-training steps per learner (default: the configs')")
    parser.add_argument("--cpu-minutes", type=float, default=None,
                        help="CPU-minutes of training per learner instead of the configs' budgets (not with --steps)")
    parser.add_argument("--val-episodes", type=int, default=None, help="default: the configs'")
    parser.add_argument("--test-episodes", type=int, default=None, help="default: the configs' (1,000 / 600)")
    parser.add_argument("--omniglot-root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the configs' ([0])")
    parser.add_argument("--workers", type=int, default=None, help="runs at once (default: the configs' 2)")
    parser.add_argument("--output-dir", default="results/recurrent", help="where <name>/ of each comparison goes")
    args = parser.parse_args()

    from rnnmeta.compare import compare

    table = []
    for task in args.tasks:
        config = narrowed(load(task), args.learners, args.steps, args.val_episodes, args.test_episodes,
                          args.omniglot_root, args.output_dir, args.workers, args.seeds, cpu_minutes=args.cpu_minutes)
        if args.cpu_minutes is not None:
            config["name"] = f"{config['name']}_{args.cpu_minutes:g}cpumin"
        for row in compare(**config):
            table.append((task, row))
    print("\n| task | learner | test metric | +- 95% CI | steps | parameters |")
    print("|---|---|---|---|---|---|")
    for task, row in table:
        print(f"| {task} | {row['learner']} | {row['metric']} {row['mean']:.4f} | {row['ci95']:.4f} | {row['steps']:,.0f} | "
              f"{row['parameters']:,} |")


if __name__ == "__main__":
    main()
