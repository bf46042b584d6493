"""The online protocol of Santoro et al. (2016) on 5-way Omniglot: per-instance accuracy of LSTMLearner, MANN and SNAIL.

Each learner is meta-trained on streams of N classes x 10 instances (labels one step late) for
``--minutes`` of wall time, then evaluated on ``--test-streams`` fixed test streams (Vinyals split).
Writes one PNG plot of accuracy by instance number, with Santoro's MANN numbers marked (82.8% at
the 2nd instance, 94.9% at the 5th, after 100,000 training episodes), the numbers beside it as JSON,
and a Markdown table on stdout.

Run:  python scripts/online_protocol.py --minutes 3 --out results/online_protocol.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnmeta.data import Omniglot  # noqa: E402
from rnnmeta.data.online import OnlineDataModule  # noqa: E402
from rnnmeta.learners.lstm import LSTMLearner  # noqa: E402
from rnnmeta.learners.mann import MANN  # noqa: E402
from rnnmeta.learners.snail import SNAIL  # noqa: E402
from rnnmeta.learners.online import REPORTED_INSTANCES, SANTORO_MANN, OnlineMetaLearner, format_table  # noqa: E402
from rnnmeta.nets import Conv4  # noqa: E402

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def make_learner(name: str, args: argparse.Namespace) -> torch.nn.Module:
    backbone = Conv4(hidden=args.filters, track_running_stats=True)
    if name == "lstm":
        return LSTMLearner(backbone=backbone, hidden_size=args.hidden, num_layers=1, n_way=args.n_way)
    if name.startswith("mann"):
        slots = int(name[4:]) if name[4:] else args.memory_slots
        return MANN(backbone=backbone, controller_size=args.hidden, memory_slots=slots, memory_width=40,
                    read_heads=4, n_way=args.n_way)
    if name == "snail":
        # one model for streams of n_way * instances steps: max_shots = instances
        return SNAIL(backbone=backbone, max_shots=args.instances, n_way=args.n_way)
    raise ValueError(f"unknown learner {name!r}; expected 'lstm', 'snail', 'mann' or 'mann<slots>' (e.g. mann16)")


def label_of(name: str, args: argparse.Namespace) -> str:
    if name == "lstm":
        return f"LSTMLearner {args.hidden}"
    if name == "snail":
        return "SNAIL"
    slots = int(name[4:]) if name[4:] else args.memory_slots
    return f"MANN {args.hidden}, memory {slots} x 40"


def run(name: str, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Train one learner for the budget and test it: (mean [10], ci95 [10], steps, training CPU seconds)."""
    pl.seed_everything(args.seed, workers=True)
    module = OnlineMetaLearner(make_learner(name, args), lr=args.lr, grad_clip_norm=1.0, max_instance=args.instances)
    dm = OnlineDataModule(Omniglot(root=str(args.root)), n_way=args.n_way, instances=args.instances,
                          batch_size=args.batch_size, eval_batch_size=50, train_batches_per_epoch=100_000,
                          test_streams=args.test_streams, seed=args.seed)
    trainer = pl.Trainer(max_time=timedelta(minutes=args.minutes), max_steps=-1, max_epochs=-1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu", devices=1)
    cpu = time.process_time()
    trainer.fit(module, datamodule=dm)
    cpu = time.process_time() - cpu
    trainer.test(module, datamodule=dm, verbose=False)
    mean, ci = module.summary("test")
    return mean, ci, int(trainer.global_step), cpu


def plot(results: dict[str, tuple[torch.Tensor, torch.Tensor]], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (mean, ci) in results.items():
        x = list(range(1, mean.numel() + 1))
        ax.errorbar(x, (100 * mean).tolist(), yerr=(100 * ci).tolist(), marker="o", capsize=3, label=name)
    ax.scatter(list(SANTORO_MANN), [100 * v for v in SANTORO_MANN.values()], marker="*", s=180, color="black",
               zorder=5, label="MANN, Santoro et al. 2016")
    for i, v in SANTORO_MANN.items():
        ax.annotate(f"{100 * v:.1f}", (i, 100 * v), textcoords="offset points", xytext=(6, -12))
    ax.axhline(100 / 5, color="grey", linestyle=":", linewidth=1, label="chance (5-way)")
    ax.set_xlabel("instance of the class in the stream")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(list(range(1, 11)))
    ax.set_ylim(0, 100)
    ax.set_title("Online protocol, 5-way Omniglot", fontsize=10)
    ax.text(0.01, 0.01, caption, transform=ax.transAxes, fontsize=7, color="dimgrey")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per learner")
    parser.add_argument("--learners", default="lstm,mann,snail",
                        help="comma-separated: lstm, snail, mann (--memory-slots rows), mann<slots> (e.g. mann16)")
    parser.add_argument("--root", type=Path, default=OMNIGLOT)
    parser.add_argument("--n-way", type=int, default=5)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--filters", type=int, default=32, help="Conv4 filters of the embedding")
    parser.add_argument("--hidden", type=int, default=200, help="LSTM units / MANN controller units (200 in the paper)")
    parser.add_argument("--memory-slots", type=int, default=128, help="MANN memory rows (128 in the paper)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-streams", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("results/online_protocol.png"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    results, rows = {}, []
    for name in args.learners.split(","):
        mean, ci, steps, cpu = run(name, args)
        label = label_of(name, args)
        results[f"{label} ({steps} it.)"] = (mean, ci)
        rows.append((f"{label}, {steps} meta-iterations x {args.batch_size} streams, {cpu:.0f} CPU-s", mean, ci))
        print(f"{label}: {steps} meta-iterations, {cpu:.0f} CPU-s; "
              + ", ".join(f"inst {i}: {100 * float(mean[i - 1]):.1f}" for i in REPORTED_INSTANCES), flush=True)
    caption = f"{args.minutes:g} min per learner, {args.test_streams} test streams, 95% CI"
    plot(results, args.out, caption)
    print(format_table(rows, [i for i in REPORTED_INSTANCES if i <= args.instances]))
    record = {name: {"mean": mean.tolist(), "ci95": ci.tolist()} for name, (mean, ci) in results.items()}
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "accuracy_by_instance": record}, indent=1))
    print(f"plot: {args.out} (numbers: {args.out.with_suffix('.json')})")


if __name__ == "__main__":
    main()
