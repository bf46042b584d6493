#!/usr/bin/env python
"""Is episode sampling cheap next to a training step? Omniglot sampler vs one Conv4 forward+backward.

For Omniglot (Vinyals split, 28x28) 5-way 1-shot and 20-way 5-shot, 15 queries per class, meta-batch
32, it times:

* the sampler: one training meta-batch from ``EpisodicDataModule.train_batch`` (seed derivation,
  class and example choice, gather, uint8 -> float32), reported as episodes (tasks) per second;
* the step: one Conv4 (64 filters) forward and backward pass over the same batch (all support and
  query images, as one batch through the embedding, plus a linear head and cross-entropy);

and prints their ratio. The goal is sampling < 5% of the step.

    python scripts/benchmark_sampling.py [--root ../shared/data/omniglot] [--reps 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from rnnmeta.data import EpisodicDataModule, Omniglot
from rnnmeta.nets.conv4 import Conv4

REPO = Path(__file__).resolve().parents[1]


def median_time(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--cache-dir", default=None, help="Omniglot cache (default: RNNMETA_CACHE or ~/.cache/rnnmeta)")
    parser.add_argument("--reps", type=int, default=3, help="timed Conv4 steps (median reported; the sampler gets 10x)")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    dataset = Omniglot(args.root, cache_dir=args.cache_dir)
    dataset.split("train")
    load_s = time.perf_counter() - start

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device cpu, load average {os.getloadavg()[0]:.1f}")
    print(f"Omniglot ready (cache load or build) in {load_s:.1f} s")
    header = f"{'setting':<16}{'images/batch':>13}{'sample ms':>11}{'episodes/s':>12}{'conv4 f+b ms':>14}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for n_way, k_shot in ((5, 1), (20, 5)):
        dm = EpisodicDataModule(dataset, n_way=n_way, k_shot=k_shot, q_queries=args.queries, meta_batch_size=args.meta_batch)
        counter = iter(range(10**9))
        sample_s = median_time(lambda: dm.train_batch(next(counter)), 10 * args.reps)
        batch = dm.train_batch(0)
        model = Conv4(in_channels=1, hidden=64, image_size=28)
        head = nn.Linear(model.out_features, n_way)
        x = torch.cat([batch.support_x, batch.query_x], dim=1)
        y = torch.cat([batch.support_y, batch.query_y], dim=1)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            head.zero_grad(set_to_none=True)
            logits = head(model(x))
            nn.functional.cross_entropy(logits.reshape(-1, n_way), y.reshape(-1)).backward()

        step_s = median_time(step, args.reps)
        n_images = x.shape[0] * x.shape[1]
        print(f"{f'{n_way}-way {k_shot}-shot':<16}{n_images:>13}{sample_s * 1e3:>11.1f}{args.meta_batch / sample_s:>12.0f}"
              f"{step_s * 1e3:>14.1f}{100 * sample_s / step_s:>7.1f}%", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
