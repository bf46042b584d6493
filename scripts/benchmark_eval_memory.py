"""Peak memory over a long evaluation: is it flat from 100 to 1,000 test episodes?

Evaluates Omniglot 5-way 1-shot test episodes as ``rnnmeta test`` does (the learner, data module
and trainer built by :func:`rnnmeta.cli.build_cli` from the config), for MAML
(``configs/omniglot/maml_5w1s.yaml``: second order, 3 inner steps at test) and the learned
optimizer (``configs/omniglot/learned_optimizer_5w1s.yaml``: 10 inner steps at test), both at
their configured architecture and a seeded initialisation (memory does not depend on the
weights). A callback reads the peak and the current resident memory (:mod:`rnnmeta.process`:
``VmHWM`` and ``/proc/self/statm``) after every 100 episodes. Learners whose evaluation needs autograd
(an inner loop) run outside inference mode, where a graph kept by mistake would grow memory by
the same amount per episode: a flat peak from 100 to 1,000 episodes rules that out.

Each learner runs in a fresh process, so one learner's peak does not hide the other's.

    python scripts/benchmark_eval_memory.py --omniglot-root ../shared/data/omniglot
    python scripts/benchmark_eval_memory.py --episodes 1000 --learners maml learned_optimizer --eval-batch-size 1
    python scripts/benchmark_eval_memory.py --episodes 4 --every 2 --omniglot-root ../shared/data/omniglot   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    "maml": REPO / "configs" / "omniglot" / "maml_5w1s.yaml",
    "learned_optimizer": REPO / "configs" / "omniglot" / "learned_optimizer_5w1s.yaml",
}
MIB = 1024 * 1024


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (:func:`rnnmeta.process.peak_resident_bytes`)."""
    from rnnmeta.process import peak_resident_bytes

    return peak_resident_bytes() / MIB


def current_rss_mib() -> float:
    """Current resident memory of this process in MiB (:func:`rnnmeta.process.resident_bytes`)."""
    from rnnmeta.process import resident_bytes

    return resident_bytes() / MIB


def _is_tensor(obj: Any) -> bool:
    import torch

    try:
        return isinstance(obj, torch.Tensor)
    except Exception:  # objects whose __class__ lookup fails
        return False


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Test ``args.episodes`` episodes with learner ``name`` in this process; memory every 100 episodes."""
    import torch
    import yaml
    from pytorch_lightning.callbacks import Callback

    from rnnmeta.cli import build_cli

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    configured_batch = yaml.safe_load(CONFIGS[name].read_text())["data"]["init_args"].get("eval_batch_size")
    overrides = ["--seed_everything", "0", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                 "--trainer.enable_model_summary", "false", "--trainer.accelerator", args.accelerator,
                 "--trainer.devices", "1", "--trainer.default_root_dir", tempfile.mkdtemp(prefix="eval_memory_"),
                 "--data.init_args.test_episodes", str(args.episodes)]
    if args.eval_batch_size:
        overrides += ["--data.init_args.eval_batch_size", str(args.eval_batch_size)]
    if args.omniglot_root:
        overrides += ["--data.init_args.dataset.init_args.root", args.omniglot_root,
                      "--data.init_args.dataset.init_args.download", "false"]
    cli = build_cli(["--config", str(CONFIGS[name]), *overrides], run=False)
    learner, dm, trainer = cli.model, cli.datamodule, cli.trainer

    class MemoryMonitor(Callback):
        def __init__(self) -> None:
            self.episodes, self.next_report, self.rows = 0, args.every, []
            self.start = time.perf_counter()

        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            self.episodes += batch.batch_size
            if self.episodes >= self.next_report or self.episodes == args.episodes:
                row = {"episodes": self.episodes, "peak_rss_mib": round(peak_rss_mib(), 1),
                       "rss_mib": round(current_rss_mib(), 1), "seconds": round(time.perf_counter() - self.start, 1)}
                # tensors alive in Python: a leak of graphs or outputs shows here as well as in RSS
                row["live_tensors"] = sum(1 for o in gc.get_objects() if _is_tensor(o))
                if torch.cuda.is_available():
                    row["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
                self.rows.append(row)
                print(f"[{name}] after {row['episodes']:5d} episodes: peak RSS {row['peak_rss_mib']:8.1f} MiB, "
                      f"RSS {row['rss_mib']:8.1f} MiB, {row['live_tensors']:6d} live tensors, {row['seconds']:6.1f} s", flush=True)
                while self.next_report <= self.episodes:
                    self.next_report += args.every

    monitor = MemoryMonitor()
    trainer.callbacks.append(monitor)
    print(f"[{name}] {type(learner).__name__}, eval_batch_size={dm.eval_batch_size} "
          f"(configured: {configured_batch}), {args.episodes} test episodes, {torch.get_num_threads()} threads; "
          f"before test: peak RSS {peak_rss_mib():.1f} MiB, RSS {current_rss_mib():.1f} MiB", flush=True)
    (result,) = trainer.test(learner, datamodule=dm, verbose=False)
    at = {r["episodes"]: r for r in monitor.rows}
    first = min((e for e in at if e >= 100), default=min(at))
    return {
        "learner": name,
        "eval_batch_size": dm.eval_batch_size,
        "episodes": int(result["test/episodes"]),
        "test_acc": float(result["test/acc"]),
        "rows": monitor.rows,
        "peak_at_100": at[first]["peak_rss_mib"],
        "peak_at_end": monitor.rows[-1]["peak_rss_mib"],
        "rss_at_100": at[first]["rss_mib"],
        "rss_at_end": monitor.rows[-1]["rss_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Peak memory over a long Omniglot 5w1s evaluation with trainer.test.")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes (default 1000)")
    parser.add_argument("--learners", nargs="+", choices=sorted(CONFIGS), default=["maml", "learned_optimizer"])
    parser.add_argument("--eval-batch-size", type=int, default=1,
                        help="episodes per test batch (default 1: 1,000 test steps; 0 keeps the config's 16)")
    parser.add_argument("--every", type=int, default=100, help="report memory every this many episodes")
    parser.add_argument("--omniglot-root", default="", help="Omniglot folder (default: the config's data/omniglot)")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: torch's default)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.episodes < 1 or args.every < 1 or args.eval_batch_size < 0:
        parser.error("--episodes and --every must be >= 1, --eval-batch-size >= 0")

    if args.child:  # one learner in this process; the result on the last line
        (name,) = args.learners
        print("RESULT " + json.dumps(run_one(name, args)), flush=True)
        return

    results = []
    for name in args.learners:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--learners", name,
               "--episodes", str(args.episodes), "--eval-batch-size", str(args.eval_batch_size),
               "--every", str(args.every), "--accelerator", args.accelerator, "--threads", str(args.threads)]
        if args.omniglot_root:
            cmd += ["--omniglot-root", args.omniglot_root]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        lines = proc.stdout.splitlines()
        for line in lines:
            if not line.startswith("RESULT "):
                print(line)
        if proc.returncode != 0:
            sys.exit(f"{name} failed with exit code {proc.returncode}")
        results.append(json.loads(next(l for l in reversed(lines) if l.startswith("RESULT "))[len("RESULT "):]))

    print()
    print("| learner | eval batch | peak RSS after 100 episodes (MiB) | after {0} | RSS after 100 | after {0} |".format(
        args.episodes))
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['learner']} | {r['eval_batch_size']} | {r['peak_at_100']:.1f} | {r['peak_at_end']:.1f} | "
              f"{r['rss_at_100']:.1f} | {r['rss_at_end']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
