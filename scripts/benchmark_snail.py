"""SNAIL on Omniglot: the cost of answering M queries, training throughput, and a timed training run.

(a) Time per episode to answer M = 1, 15, 75 queries with the cached batched pass
    (``SNAIL.forward``: support encoded once, M next steps in one pass) against one full
    sequence per query (``SNAIL.forward_naive``: B * M sequences), both in eval mode without
    gradients, and the same for the sequence network alone (support and query embeddings
    precomputed), which isolates what the caching saves.
(b) Training throughput in episodes per second (forward, backward and Adam step), 5-way 1-shot,
    with the meta-batch and queries per class given.
(c) ``--train-minutes N``: meta-train on Omniglot 5-way 1-shot for N minutes with the data
    module and a ``pl.Trainer(max_time=...)``, then report test accuracy with its 95% CI over
    1,000 fixed test episodes.

Run:  python scripts/benchmark_snail.py [--repeats 10] [--meta-batch 32] [--queries 15]
      python scripts/benchmark_snail.py --skip-timing --train-minutes 5 [--compact --max-shots 1 --queries 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rnnmeta.learners.snail import SNAIL  # noqa: E402
from rnnmeta.nets import Conv4  # noqa: E402

OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


def random_episode(batch: int, n_way: int, k_shot: int, m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(batch, n_way * k_shot, 1, 28, 28, generator=g)
    sy = torch.stack([torch.randperm(n_way * k_shot, generator=g) % n_way for _ in range(batch)])
    qx = torch.rand(batch, m, 1, 28, 28, generator=g)
    qy = torch.randint(0, n_way, (batch, m), generator=g)
    return sx, sy, qx, qy


def fastest(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Fastest of ``repeats`` calls of each function, in seconds of ``clock``, after one warm-up call each.

    Calls are interleaved round by round so that load from other processes hits all alike; the
    minimum is the least disturbed measurement.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: min(ts) for name, ts in times.items()}


def query_cost(repeats: int) -> None:
    # CPU time of one thread: the compute cost, insensitive to other processes sharing the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print("(a) CPU time per episode (ms, 1 thread, fastest of repeats) to answer M queries, eval mode, no grad;")
    print("    'net' columns: the sequence network alone, embeddings precomputed")
    print(f"{'setting':>8} {'M':>4} | {'cached':>9} {'naive':>9} {'ratio':>6} | {'net cached':>10} {'net naive':>10} {'ratio':>6}")
    for k_shot in (1, 5):
        torch.manual_seed(0)
        learner = SNAIL(n_way=5, max_shots=5).eval()
        for m in (1, 15, 75):
            sx, sy, qx, _ = random_episode(1, 5, k_shot, m)
            with torch.no_grad():
                sup, qry = learner.support_steps(sx, sy), learner.query_steps(qx)
                s, c = sup.shape[1:]
                seqs = torch.cat([sup.unsqueeze(1).expand(1, m, s, c), qry.unsqueeze(2)], 2).reshape(m, s + 1, c)
                t = fastest(
                    {
                        "cached": lambda: learner(sx, sy, qx),
                        "naive": lambda: learner.forward_naive(sx, sy, qx),
                        "net_cached": lambda: learner.network.step(qry, learner.network.encode(sup)),
                        "net_naive": lambda: learner.network(seqs)[:, -1],
                    },
                    repeats,
                    clock=time.process_time,
                )
                cached, naive, net_cached, net_naive = t["cached"], t["naive"], t["net_cached"], t["net_naive"]
            print(
                f"{'5w' + str(k_shot) + 's':>8} {m:>4} | {1e3 * cached:9.2f} {1e3 * naive:9.2f} {naive / cached:6.1f} | "
                f"{1e3 * net_cached:10.2f} {1e3 * net_naive:10.2f} {net_naive / net_cached:6.1f}"
            )
    torch.set_num_threads(threads)


def throughput(meta_batch: int, queries: int, max_shots: int, repeats: int, compact: bool) -> None:
    torch.manual_seed(0)
    learner = make_learner(compact, max_shots, 1e-3).train()
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    sx, sy, qx, qy = random_episode(meta_batch, 5, 1, 5 * queries)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        learner.task_losses(learner(sx, sy, qx), qy).mean().backward()
        opt.step()

    sec = fastest({"step": step}, repeats)["step"]
    cpu = fastest({"step": step}, repeats, clock=time.process_time)["step"]
    print(
        f"(b) training, {'compact' if compact else 'paper'} layout, 5-way 1-shot, max_shots={max_shots} (T={learner.seq_len}), meta-batch {meta_batch}, "
        f"{queries} queries per class: {sec:.3f} s per step = {meta_batch / sec:.1f} episodes/s wall-clock "
        f"({cpu:.3f} CPU-s per step over {torch.get_num_threads()} threads) "
        f"({learner.num_parameters():,} parameters)"
    )


def make_learner(compact: bool, max_shots: int, lr: float) -> SNAIL:
    """The Omniglot layout of the paper, or a compact one (Conv4 with 32 filters, narrow blocks) for CPU runs."""
    if not compact:
        return SNAIL(n_way=5, max_shots=max_shots, lr=lr)
    return SNAIL(
        backbone=Conv4(hidden=32, track_running_stats=True),
        n_way=5,
        max_shots=max_shots,
        lr=lr,
        key_sizes=[16, 32, 64],
        value_sizes=[16, 32, 32],
        tc_filters=[32, 32],
    )


def train(minutes: float, meta_batch: int, queries: int, max_shots: int, lr: float, seed: int, compact: bool) -> None:
    import pytorch_lightning as pl

    from rnnmeta.data import EpisodicDataModule, Omniglot

    pl.seed_everything(seed, workers=True)
    dm = EpisodicDataModule(
        dataset=Omniglot(root=str(OMNIGLOT)),
        n_way=5,
        k_shot=1,
        q_queries=queries,
        meta_batch_size=meta_batch,
        eval_batch_size=50,
        train_batches_per_epoch=100_000,
        val_episodes=100,
        test_episodes=1000,
        seed=seed,
    )
    learner = make_learner(compact, max_shots, lr)
    trainer = pl.Trainer(
        max_time={"minutes": minutes},
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
    fit_s = time.perf_counter() - t0
    steps = trainer.global_step
    (result,) = trainer.test(learner, datamodule=dm, verbose=False)
    acc, ci = 100 * result["test/acc"], 100 * result["test/acc_ci95"]
    print(
        f"(c) trained {fit_s / 60:.1f} min, {steps} steps x {meta_batch} episodes ({steps * meta_batch / fit_s:.1f} episodes/s), "
        f"{'compact' if compact else 'paper'} layout ({learner.num_parameters():,} parameters), max_shots={max_shots}, "
        f"meta-batch {meta_batch}, {queries} queries per class, lr={lr}: test accuracy 5-way 1-shot = {acc:.2f} +- {ci:.2f} % "
        f"over {int(result['test/episodes'])} episodes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=15, help="queries per class")
    parser.add_argument("--max-shots", type=int, default=5, help="T = 5 * max_shots + 1")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compact", action="store_true", help="compact layout for (b) and (c) (see make_learner)")
    parser.add_argument("--skip-timing", action="store_true", help="skip (a) and (b)")
    parser.add_argument("--train-minutes", type=float, default=0.0, help="run (c) for this many minutes")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only")
    if not args.skip_timing:
        query_cost(args.repeats)
        throughput(args.meta_batch, args.queries, args.max_shots, args.repeats, args.compact)
    if args.train_minutes > 0:
        train(args.train_minutes, args.meta_batch, args.queries, args.max_shots, args.lr, args.seed, args.compact)


if __name__ == "__main__":
    main()
