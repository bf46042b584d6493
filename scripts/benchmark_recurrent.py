"""The black-box recurrent learners (LSTMLearner, MANN) after a fixed CPU training budget.

For each learner:

(a) Omniglot 5-way 1-shot: meta-train for ``--minutes`` with the data module and
    ``pl.Trainer(max_time=...)``, then report test accuracy with its 95% CI over
    ``--test-episodes`` fixed test episodes (Vinyals split).
(b) Sinusoid regression, K = 5 and K = 10 support points: meta-train for ``--sinusoid-minutes``
    each, then report the query MSE with its 95% CI over the fixed test episodes.

Run:  python scripts/benchmark_recurrent.py --minutes 2 --sinusoid-minutes 0.5
      python scripts/benchmark_recurrent.py --learners mann --skip-sinusoid --minutes 10
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnmeta.data import EpisodicDataModule, Omniglot, Sinusoid  # noqa: E402
from rnnmeta.learners.base import MetaLearner  # noqa: E402
from rnnmeta.learners.lstm import LSTMLearner  # noqa: E402
from rnnmeta.learners.mann import MANN  # noqa: E402

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def make_learner(name: str, kind: str, lr: float) -> MetaLearner:
    """The library defaults (Conv4 or the sinusoid MLP; LSTM 2 x 256; MANN 200-unit controller, 128 x 40 memory, 4 heads)."""
    common = dict(kind=kind, n_way=5, target_dim=1, lr=lr, grad_clip_norm=1.0)
    if name == "lstm":
        return LSTMLearner(**common)
    if name == "mann":
        return MANN(**common)
    raise ValueError(f"unknown learner {name!r}; expected 'lstm' or 'mann'")


def run(learner: MetaLearner, dm: EpisodicDataModule, minutes: float) -> tuple[dict, int, float]:
    """Train for ``minutes`` of wall time, then test: (test metrics, steps taken, seconds spent training)."""
    trainer = pl.Trainer(
        max_time=timedelta(minutes=minutes),
        max_steps=-1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
    )
    t0 = time.perf_counter()
    trainer.fit(learner, datamodule=dm)
    seconds = time.perf_counter() - t0
    (result,) = trainer.test(learner, datamodule=dm, verbose=False)
    return result, trainer.global_step, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", nargs="+", default=["lstm", "mann"], choices=["lstm", "mann"])
    parser.add_argument("--minutes", type=float, default=2.0, help="Omniglot training budget per learner (wall time)")
    parser.add_argument("--sinusoid-minutes", type=float, default=0.5, help="sinusoid training budget per learner and K")
    parser.add_argument("--meta-batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=5, help="query examples per class (Omniglot)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test-episodes", type=int, default=1000)
    parser.add_argument("--omniglot-root", default=str(OMNIGLOT))
    parser.add_argument("--skip-omniglot", action="store_true")
    parser.add_argument("--skip-sinusoid", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name in args.learners:
        if not args.skip_omniglot:
            pl.seed_everything(args.seed, workers=True)
            dm = EpisodicDataModule(
                dataset=Omniglot(root=args.omniglot_root),
                n_way=5,
                k_shot=1,
                q_queries=args.queries,
                meta_batch_size=args.meta_batch,
                eval_batch_size=50,
                train_batches_per_epoch=1000,
                val_episodes=50,
                test_episodes=args.test_episodes,
                seed=args.seed,
            )
            res, steps, secs = run(make_learner(name, "classification", args.lr), dm, args.minutes)
            rows.append((name, "Omniglot 5w1s acc", res["test/acc"], res.get("test/acc_ci95", float("nan")), steps, secs))
            print(rows[-1], flush=True)
        if not args.skip_sinusoid:
            for k in (5, 10):
                pl.seed_everything(args.seed, workers=True)
                dm = EpisodicDataModule(
                    dataset=Sinusoid(),
                    k_shot=k,
                    q_queries=10,
                    meta_batch_size=25,
                    eval_batch_size=100,
                    train_batches_per_epoch=1000,
                    val_episodes=100,
                    test_episodes=args.test_episodes,
                    seed=args.seed,
                )
                res, steps, secs = run(make_learner(name, "regression", args.lr), dm, args.sinusoid_minutes)
                rows.append((name, f"sinusoid K={k} mse", res["test/mse"], res.get("test/mse_ci95", float("nan")), steps, secs))
                print(rows[-1], flush=True)
    print()
    print(f"| learner | task | test metric (95% CI) | meta-iterations | training s |")
    print("|---|---|---|---|---|")
    for name, task, mean, ci, steps, secs in rows:
        print(f"| {name} | {task} | {mean:.4f} +- {ci:.4f} | {steps} | {secs:.0f} |")


if __name__ == "__main__":
    main()
