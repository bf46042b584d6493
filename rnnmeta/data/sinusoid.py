"""The sinusoid regression task family of MAML (Finn, Abbeel & Levine 2017).

A task is ``y = A * sin(x - phi)`` with amplitude ``A ~ U[0.1, 5.0]``, phase ``phi ~ U[0, pi]``,
and inputs ``x ~ U[-5, 5]`` (the paper's ranges, all configurable). The family is infinite, so the
three splits draw from the same distribution; the data module's seeding keeps them apart.
"""

from __future__ import annotations

import math

import torch

from rnnmeta.data.base import FewShotDataset, TaskSource, check_split_name
from rnnmeta.episode import REGRESSION, Episode

__all__ = ["Sinusoid", "SinusoidSource"]


def _check_range(name: str, value: tuple[float, float], strict: bool) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Sinusoid {name} must be a pair (low, high) of numbers, got {value!r}") from exc
    if math.isnan(lo) or math.isnan(hi) or (hi <= lo if strict else hi < lo):
        relation = "<" if strict else "<="
        raise ValueError(f"Sinusoid {name} must satisfy low {relation} high, got {value!r}")
    return lo, hi


class SinusoidSource(TaskSource):
    """Draws batches of sinusoid regression tasks (one split of :class:`Sinusoid`).

    ``sample`` returns an :class:`~rnnmeta.episode.Episode` with ``support_x``/``support_y``
    ``[B, K, 1]`` and ``query_x``/``query_y`` ``[B, Q, 1]`` (float32), ``n_way = 0``; the
    ``n_way`` argument is ignored and ``q_queries`` is the number of query points per task.
    """

    kind = REGRESSION

    def __init__(self, amplitude: tuple[float, float], phase: tuple[float, float], x_range: tuple[float, float]) -> None:
        self.amplitude = amplitude
        self.phase = phase
        self.x_range = x_range

    def sample_with_params(
        self, generator: torch.Generator, batch_size: int, k_shot: int, q_queries: int
    ) -> tuple[Episode, torch.Tensor, torch.Tensor]:
        """Like :meth:`sample`, also returning the tasks' amplitudes and phases (each ``[B]``)."""
        for name, value, least in (("batch_size", batch_size, 1), ("k_shot", k_shot, 1), ("q_queries", q_queries, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Sinusoid {name} must be an integer >= {least}, got {value!r}")
        (a0, a1), (p0, p1), (x0, x1) = self.amplitude, self.phase, self.x_range
        amp = torch.rand(batch_size, generator=generator) * (a1 - a0) + a0
        phase = torch.rand(batch_size, generator=generator) * (p1 - p0) + p0
        x = torch.rand(batch_size, k_shot + q_queries, 1, generator=generator) * (x1 - x0) + x0
        y = amp[:, None, None] * torch.sin(x - phase[:, None, None])
        episode = Episode(
            support_x=x[:, :k_shot].contiguous(),
            support_y=y[:, :k_shot].contiguous(),
            query_x=x[:, k_shot:].contiguous(),
            query_y=y[:, k_shot:].contiguous(),
            kind=REGRESSION,
            n_way=0,
        )
        return episode, amp, phase

    def sample(self, generator: torch.Generator, batch_size: int, n_way: int, k_shot: int, q_queries: int) -> Episode:
        """``batch_size`` tasks with ``k_shot`` support and ``q_queries`` query points each (``n_way`` ignored)."""
        return self.sample_with_params(generator, batch_size, k_shot, q_queries)[0]


class Sinusoid(FewShotDataset):
    """Sinusoid regression tasks ``y = A sin(x - phi)`` (Finn et al. 2017, MAML, section 5.1).

    Args:
        amplitude: range of ``A`` (paper: 0.1 to 5.0).
        phase: range of ``phi`` (paper: 0 to pi).
        x_range: range of the inputs ``x`` (paper: -5 to 5).

    ``kind = "regression"``, ``x_shape = (1,)``; every split draws from the same family.

    Raises:
        ValueError: a range that is not ``(low, high)`` with ``low <= high`` (``low < high`` for ``x_range``),
            or a negative amplitude.
    """

    kind = REGRESSION
    x_shape = (1,)

    def __init__(
        self,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.amplitude = _check_range("amplitude", amplitude, strict=False)
        if self.amplitude[0] < 0:
            raise ValueError(f"Sinusoid amplitude must be non-negative, got {amplitude!r}")
        self.phase = _check_range("phase", phase, strict=False)
        self.x_range = _check_range("x_range", x_range, strict=True)
        self._source = SinusoidSource(self.amplitude, self.phase, self.x_range)

    def split(self, name: str) -> SinusoidSource:
        """The task source (the same family for ``"train"``, ``"val"`` and ``"test"``)."""
        check_split_name(name)
        return self._source

    def __repr__(self) -> str:
        return f"Sinusoid(amplitude={self.amplitude}, phase={self.phase}, x_range={self.x_range})"
