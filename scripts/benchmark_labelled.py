"""What ``LabelledDataset`` costs: reading a dataset of ``(x, label)`` pairs once, and a training batch with and without augmentation.

The dataset is Omniglot's Vinyals training split (without rotations) as a torchvision-style dataset
of ``(uint8 [1, 28, 28] tensor, int label)`` pairs, read through ``__getitem__`` one pair at a
time as any user dataset is. Measured: the one-time read into the tensor cache, and the median
time of one training meta-batch (``EpisodicDataModule.train_batch``) without a transform and
with a per-example random flip plus shift (a transform that draws from the episode's generator),
beside one Conv4 (64 filters) forward and backward pass over the same batch (the training step
it feeds).

Run:  python scripts/benchmark_labelled.py [--classes 1028] [--meta-batch 32] [--queries 15] [--reps 5]
      python scripts/benchmark_labelled.py --classes 20 --meta-batch 2 --queries 1 --reps 1   # smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from rnnmeta.data import EpisodicDataModule, LabelledDataset, Omniglot
from rnnmeta.nets import Conv4

REPO = Path(__file__).resolve().parents[1]


class Pairs(torch.utils.data.Dataset):
    """``(image, label)`` pairs of the first ``classes`` classes of a split, one per ``__getitem__``."""

    def __init__(self, images: torch.Tensor, counts: torch.Tensor, classes: int) -> None:
        self.images = images[: int(counts[:classes].sum())]
        self.labels = torch.repeat_interleave(torch.arange(classes), counts[:classes]).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


def flip_and_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a shift of up to 2 pixels, all drawn from ``generator``."""
    if bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(-1)
    dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--classes", type=int, default=1028, help="training characters (1,028: all of the split)")
    parser.add_argument("--meta-batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train = Omniglot(root=args.root, rotations=False).split("train")
    pairs = Pairs(train.images, train.counts, min(args.classes, train.n_classes))
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f}; {len(pairs):,} pairs of {args.classes} classes, meta-batch {args.meta_batch} "
          f"of 5-way 1-shot tasks with {args.queries} queries per class")
    rows = []
    for name, transform in (("no transform", None), ("flip_and_shift", flip_and_shift)):
        start = time.perf_counter()
        data = LabelledDataset(pairs, split_fractions=(1.0, 0.0, 0.0), transform=transform)
        data.prepare()
        read_s = time.perf_counter() - start
        dm = EpisodicDataModule(data, n_way=5, k_shot=1, q_queries=args.queries, meta_batch_size=args.meta_batch,
                                val_episodes=1, test_episodes=1)
        counter = iter(range(10**9))
        rows.append((name, read_s, median_ms(lambda: dm.train_batch(next(counter)), args.reps)))
    net = nn.Sequential(Conv4(hidden=64), nn.Linear(64, 5))
    batch = dm.train_batch(0)
    x = torch.cat([batch.support_x.flatten(0, 1), batch.query_x.flatten(0, 1)])

    def step() -> None:
        net.zero_grad(set_to_none=True)
        net(x).logsumexp(-1).mean().backward()

    step_ms = median_ms(step, args.reps)
    print("\n| training batch | read the dataset once (s) | batch ms | Conv4 f+b ms | batch / step |")
    print("|---|---|---|---|---|")
    for name, read_s, ms in rows:
        print(f"| {name} | {read_s:.2f} | {ms:.1f} | {step_ms:.1f} | {100 * ms / step_ms:.1f}% |")


if __name__ == "__main__":
    main()
