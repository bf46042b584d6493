"""Running observation normalisation for continuous-control agents, kept in the checkpoint.

MuJoCo observations mix joint angles (order 1) with velocities (order 10); policy networks learn
faster on standardised inputs, so PPO implementations for locomotion (Schulman et al. 2017's
baselines; Engstrom et al. 2020, "Implementation Matters in Deep RL", which measures its effect)
divide each observation coordinate by a running standard deviation after subtracting a running mean,
and clip the result. :class:`RunningNorm` holds those statistics as module *buffers*: they are saved in
``state_dict`` and so in every Lightning checkpoint, and an agent restored from a checkpoint acts on
exactly the inputs it was trained on.

The statistics are merged batch by batch with the parallel-variance formula of Chan et al. (1979)
(exact: the same mean and variance as over all data at once, in float64), and only from data the
caller says is real (``mask``: the steps before an episode terminated).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class RunningNorm(nn.Module):
    """``clip((x - mean) / sqrt(var + eps), -clip, clip)`` with running ``mean``/``var`` per coordinate.

    Args:
        width: coordinates per observation ``D``.
        clip: bound of the normalised values (10, as in OpenAI baselines' ``VecNormalize``).
        eps: added to the variance.

    Buffers (in the checkpoint): ``count`` ``[]`` float64, ``mean`` ``[D]`` float64, ``var`` ``[D]`` float64
    (population variance). Before any :meth:`update` the map is the identity (mean 0, var 1, up to ``eps``).
    """

    def __init__(self, width: int, clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"RunningNorm: width must be an integer >= 1, got width={width!r}")
        if not clip > 0:
            raise ValueError(f"RunningNorm: clip must be > 0, got clip={clip!r}")
        self.width, self.clip, self.eps = width, float(clip), float(eps)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(width, dtype=torch.float64))
        self.register_buffer("var", torch.ones(width, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor, mask: Optional[Tensor] = None) -> None:
        """Merge the observations ``x [..., D]`` (those where ``mask [...]`` is True) into the statistics."""
        count, mean, var = self.merged(x, mask)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.copy_(count)

    @torch.no_grad()
    def merged(self, x: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(count, mean, var)`` the statistics would hold after :meth:`update` with ``x`` and ``mask``; they are left as they are."""
        if x.shape[-1] != self.width:
            raise ValueError(f"RunningNorm(width={self.width}): observations must end in {self.width}, got shape {list(x.shape)}")
        flat = x.detach().reshape(-1, self.width).double()
        if mask is not None:
            if mask.shape != x.shape[:-1]:
                raise ValueError(f"RunningNorm: mask shape {list(mask.shape)} must be the observations' leading shape {list(x.shape[:-1])}")
            flat = flat[mask.reshape(-1).bool()]
        n = flat.shape[0]
        if n == 0:
            return self.count.clone(), self.mean.clone(), self.var.clone()
        batch_mean = flat.mean(0)
        batch_var = flat.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (n / total)
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * (self.count * n / total)
        return total, new_mean, m2 / total

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., D]`` normalised, in ``x``'s dtype."""
        z = (x.double() - self.mean) / (self.var + self.eps).sqrt()
        return z.clamp(-self.clip, self.clip).to(x.dtype)

    def extra_repr(self) -> str:
        return f"width={self.width}, clip={self.clip}"


__all__ = ["RunningNorm"]
