"""The evaluation protocol: mean and 95% confidence interval over a fixed set of episodes.

Following Finn et al. (2017) and Snell et al. (2017), a learner is scored by its mean metric over
a fixed set of test episodes, reported with the half-width of a normal 95% confidence interval,
``1.96 * std / sqrt(n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
from torch import Tensor


@dataclass(frozen=True)
class MeanCI:
    """A mean with the half-width of its 95% confidence interval over ``n`` episodes."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} +- {self.ci95:.4f} (n={self.n})"


def mean_ci95(values: Tensor) -> MeanCI:
    """Mean and 95% CI half-width ``1.96 * std / sqrt(n)`` of per-episode values ``[n]``.

    The standard deviation is the sample one (``n - 1``); a single episode has CI ``nan``.
    """
    values = values.detach().double().flatten()
    n = int(values.numel())
    if n == 0:
        raise ValueError("mean_ci95 needs at least one episode value, got an empty tensor")
    if not torch.isfinite(values).all():
        raise ValueError(f"mean_ci95 got {int((~torch.isfinite(values)).sum())} non-finite episode values")
    mean = float(values.mean())
    ci = 1.96 * float(values.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return MeanCI(mean=mean, ci95=ci, n=n)


def paired_difference(values: Tensor, reference: Tensor) -> MeanCI:
    """Mean and 95% CI half-width of ``values - reference``, two per-episode series ``[n]`` on the same episodes.

    The paired comparison of two learners tested on the same episodes: each episode's difference
    cancels what the two share (a hard episode is hard for both), so its CI is narrower than the two
    CIs side by side and decides whether the difference is larger than the choice of test
    episodes explains. It says nothing of the spread over training seeds.
    """
    values, reference = values.detach().double().flatten(), reference.detach().double().flatten()
    if values.shape != reference.shape:
        raise ValueError(
            f"paired_difference needs two series over the same episodes, got {values.numel()} and {reference.numel()} values"
        )
    return mean_ci95(values - reference)


def gather_episode_rows(module: pl.LightningModule, values: Tensor) -> Tensor:
    """Per-episode rows ``[n_r, *]`` of every rank, concatenated ``[sum n_r, *]``; counts may differ.

    The rows are interleaved round-robin over the ranks (rank 0's first, rank 1's first, ...,
    rank 0's second, ...). Rank ``r`` of :class:`~rnnmeta.data.EpisodicDataModule` evaluates the
    episodes ``i`` with ``i % world_size == r`` in order, so the result is in episode order, as
    with one process; for any other sharding it is a permutation of it. Every rank gets the
    same result, so statistics computed from it are global without further syncing.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size == 1:
        return values
    tail = tuple(values.shape[1:])
    count = torch.tensor([values.shape[0]], device=module.device)
    counts = module.all_gather(count).flatten().cpu()  # [W]
    longest = int(counts.max())
    padded = torch.zeros((longest, *tail), dtype=values.dtype, device=module.device)
    padded[: values.shape[0]] = values.to(module.device)
    gathered = module.all_gather(padded).reshape(-1, longest, *tail).cpu()  # [W, longest, *]
    present = torch.arange(longest)[None, :] < counts[:, None]  # [W, longest]
    return gathered.transpose(0, 1)[present.t()]
