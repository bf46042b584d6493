"""What portable numerics cost: CPU milliseconds per training step of each learner of a comparison, native against portable.

Each (learner, numerics) pair is timed in its own fresh process (portable numerics must be set when
a process starts: :mod:`rnnmeta.numerics`), one torch thread, on one fixed training batch of the
comparison's data: a few warm-up steps, then ``--steps`` timed optimizer steps on the process's CPU
clock; the median of ``--repeats`` such processes is printed. The pairs run one after another, so
run it on an idle machine.

Run:  python scripts/benchmark_numerics.py [--config configs/compare/sinusoid.yaml] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(config: str, learner: str, numerics: str, steps: int) -> None:
    """Time ``steps`` training steps of ``learner`` under ``numerics``; print one JSON line."""
    import time

    import pytorch_lightning as pl
    import torch
    import yaml

    from rnnmeta.compare.config import build_learner, validate_specs
    from rnnmeta.numerics import describe, use

    torch.set_num_threads(1)
    cfg = yaml.safe_load(Path(config).read_text())
    data, runs = validate_specs(cfg["data"], cfg["learners"])
    with use(numerics):
        pl.seed_everything(0, verbose=False)
        datamodule, model = build_learner(data, runs[learner])
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        def step() -> None:
            optimizer.zero_grad()
            loss, _ = model.episode_step(batch)
            loss.backward()
            optimizer.step()

        for _ in range(3):
            step()
        start = time.process_time()
        for _ in range(steps):
            step()
        print(json.dumps({"ms": (time.process_time() - start) / steps * 1e3, "numerics": describe()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "compare" / "sinusoid.yaml"))
    ap.add_argument("--steps", type=int, default=50, help="timed training steps per process")
    ap.add_argument("--repeats", type=int, default=3, help="processes per (learner, numerics); the median is printed")
    ap.add_argument("--learners", nargs="*", default=None, help="default: every learner of the config")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.config, args.child[0], args.child[1], args.steps)
    import yaml

    from rnnmeta.compare.runner import cpu_name
    from rnnmeta.numerics import portable_environment

    learners = args.learners or list(yaml.safe_load(Path(args.config).read_text())["learners"])
    print(f"CPU: {cpu_name()}; 1 torch thread; {args.steps} steps per process, median of {args.repeats} processes")
    print(f"config: {args.config}\n")
    print("| learner | native ms/step | portable ms/step | portable / native |")
    print("|---|---|---|---|")
    described = {}
    for learner in learners:
        ms = {}
        for numerics in ("native", "portable"):
            env = portable_environment() if numerics == "portable" else None
            runs = []
            for _ in range(args.repeats):
                command = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps),
                           "--child", learner, numerics]
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
                record = json.loads(out.strip().splitlines()[-1])
                runs.append(record["ms"])
                described[numerics] = record["numerics"]
            ms[numerics] = statistics.median(runs)
        print(f"| {learner} | {ms['native']:.2f} | {ms['portable']:.2f} | {ms['portable'] / ms['native']:.2f} |", flush=True)
    print()
    for numerics, text in described.items():
        print(f"{numerics}: {text}")


if __name__ == "__main__":
    main()
