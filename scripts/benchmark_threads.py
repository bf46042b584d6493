"""Which torch thread count trains a shipped config fastest on this machine?

For each config and each thread count, builds the run exactly as ``rnnmeta fit`` does
(``rnnmeta.cli.build_cli(run=False)`` with ``--threads N``), trains ``--steps`` meta-iterations
after ``--warmup`` untimed ones, with validation off, and prints the wall and process-CPU seconds
per step. Each (config, threads) pair runs in a fresh process, in a shuffled order, ``--repeats``
times; the table gives the median. Wall time is what a user waits for; on a machine that other
jobs share, a second thread that waits for a busy core shows up there, not in the CPU column.

Run:  python scripts/benchmark_threads.py --configs configs/sinusoid/maml_k5.yaml configs/omniglot/protonet_5w1s.yaml \\
          --threads 1 2 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(config: str, threads: int, steps: int, warmup: int, root: str) -> dict:
    """Train ``warmup + steps`` steps of ``config`` on ``threads`` threads in this process; seconds per timed step."""
    import pytorch_lightning as pl

    from rnnmeta.cli import build_cli

    args = ["--config", config, "--threads", str(threads), "--trainer.logger", "false", "--trainer.max_steps",
            str(warmup + steps), "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.callbacks", "[]", "--trainer.enable_model_summary", "false"]
    if "omniglot" in config:
        args += ["--data.init_args.dataset.init_args.root", root, "--data.init_args.dataset.init_args.download", "false"]
    cli = build_cli(args, run=False)
    marks: dict[str, float] = {}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup and "wall" not in marks:
                marks["wall"], marks["cpu"] = time.perf_counter(), time.process_time()

    cli.trainer.callbacks.append(Clock())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    wall, cpu = time.perf_counter() - marks["wall"], time.process_time() - marks["cpu"]
    return {"wall_per_step": wall / steps, "cpu_per_step": cpu / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["configs/sinusoid/maml_k5.yaml", "configs/omniglot/protonet_5w1s.yaml"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--omniglot-root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: "config|threads", run in this process
    args = parser.parse_args()
    if args.one:
        config, threads = args.one.rsplit("|", 1)
        print(json.dumps(one_run(config, int(threads), args.steps, args.warmup, args.omniglot_root)))
        return
    import torch

    jobs = [(c, t) for c in args.configs for t in args.threads] * args.repeats
    random.Random(0).shuffle(jobs)
    results: dict[tuple[str, int], list[dict]] = {}
    for config, threads in jobs:
        out = subprocess.run(
            [sys.executable, __file__, "--one", f"{config}|{threads}", "--steps", str(args.steps), "--warmup",
             str(args.warmup), "--omniglot-root", args.omniglot_root],
            cwd=REPO, capture_output=True, text=True, env=dict(os.environ, WANDB_MODE="disabled"), check=True,
        )
        results.setdefault((config, threads), []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}; "
          f"{args.steps} timed steps after {args.warmup}, median of {args.repeats}")
    print("| config | threads | wall s/step | CPU s/step |")
    print("|---|---|---|---|")
    for (config, threads), runs in sorted(results.items()):
        wall = statistics.median(r["wall_per_step"] for r in runs)
        cpu = statistics.median(r["cpu_per_step"] for r in runs)
        print(f"| {config} | {threads} | {wall:.4f} | {cpu:.4f} |")


if __name__ == "__main__":
    main()
