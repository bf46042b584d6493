"""The unit of data every learner consumes: a batch of few-shot tasks.

An :class:`Episode` holds ``B`` tasks that share one shape:

* ``support_x``: ``[B, S, *x_shape]`` with ``S = N * K`` labelled examples per task
* ``support_y``: ``[B, S]`` int64 in ``0..N-1`` (classification) or ``[B, S, d_y]`` float (regression)
* ``query_x``:   ``[B, M, *x_shape]``
* ``query_y``:   ``[B, M]`` int64 or ``[B, M, d_y]`` float

It checks its own shapes and dtypes on construction, so a malformed batch fails where it is
made, with a message that names the offending tensor, rather than deep inside a learner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASK_KINDS = (CLASSIFICATION, REGRESSION)
_TENSORS = ("support_x", "support_y", "query_x", "query_y")


def _shape(t: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


@dataclass
class Episode:
    """A batch of ``B`` few-shot tasks (see the module docstring for the shapes).

    Args:
        support_x: support inputs, ``[B, S, *x_shape]``.
        support_y: support targets, ``[B, S]`` int64 or ``[B, S, d_y]`` float.
        query_x: query inputs, ``[B, M, *x_shape]``.
        query_y: query targets, ``[B, M]`` int64 or ``[B, M, d_y]`` float.
        kind: ``"classification"`` or ``"regression"``.
        n_way: number of classes per task (classification); ``0`` for regression.
        target_dim: width ``d_y`` the targets must have (regression); ``0`` accepts any width.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    kind: str = CLASSIFICATION
    n_way: int = 0
    target_dim: int = 0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` naming the tensor that breaks the contract."""
        if self.kind not in TASK_KINDS:
            raise ValueError(f"Episode.kind must be one of {TASK_KINDS}, got {self.kind!r}")
        for name in _TENSORS:
            if not isinstance(getattr(self, name), Tensor):
                raise TypeError(f"Episode.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        sx, sy, qx, qy = self.support_x, self.support_y, self.query_x, self.query_y
        if sx.dim() < 3:
            raise ValueError(f"Episode.support_x must be [B, S, *x_shape] (at least 3 dims), got {_shape(sx)}")
        if qx.dim() != sx.dim() or qx.shape[0] != sx.shape[0] or qx.shape[2:] != sx.shape[2:]:
            raise ValueError(
                f"Episode.query_x must be [B, M, *x_shape] matching support_x {_shape(sx)} in B and x_shape, got {_shape(qx)}"
            )
        batch, n_support, n_query = sx.shape[0], sx.shape[1], qx.shape[1]
        if n_support == 0:
            raise ValueError(
                f"Episode.support_x holds no examples (S=0, got {_shape(sx)}): every task needs a non-empty support set"
            )
        if self.kind == CLASSIFICATION:
            for name, y, n in (("support_y", sy, n_support), ("query_y", qy, n_query)):
                if y.dtype != torch.int64:
                    raise TypeError(f"Episode.{name} must be int64 class labels for classification, got {y.dtype}")
                if tuple(y.shape) != (batch, n):
                    raise ValueError(f"Episode.{name} must have shape [{batch}, {n}], got {_shape(y)}")
            if self.n_way < 1:
                raise ValueError(f"Episode.n_way must be >= 1 for classification, got {self.n_way}")
            # label ranges are checked on the host only: on an accelerator it would force a sync per batch
            for name, y in (("support_y", sy), ("query_y", qy)):
                if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_way):
                    raise ValueError(
                        f"Episode.{name} labels must lie in 0..{self.n_way - 1}, "
                        f"got range {int(y.min())}..{int(y.max())}"
                    )
        else:
            for name, y, n in (("support_y", sy, n_support), ("query_y", qy, n_query)):
                if not y.is_floating_point():
                    raise TypeError(f"Episode.{name} must be a float tensor for regression, got {y.dtype}")
                if y.dim() != 3 or tuple(y.shape[:2]) != (batch, n):
                    raise ValueError(f"Episode.{name} must have shape [{batch}, {n}, d_y], got {_shape(y)}")
            if sy.shape[2] != qy.shape[2]:
                raise ValueError(f"Episode support_y and query_y disagree in d_y: {_shape(sy)} vs {_shape(qy)}")
            if self.target_dim and sy.shape[2] != self.target_dim:
                raise ValueError(
                    f"Episode.support_y must have shape [{batch}, {n_support}, {self.target_dim}] (target_dim="
                    f"{self.target_dim}), got {_shape(sy)}; set the learner's target_dim to the data's d_y"
                )

    # ------------------------------------------------------------- properties
    @property
    def batch_size(self) -> int:
        """Number of tasks ``B``."""
        return int(self.support_x.shape[0])

    @property
    def n_support(self) -> int:
        return int(self.support_x.shape[1])

    @property
    def n_query(self) -> int:
        return int(self.query_x.shape[1])

    @property
    def k_shot(self) -> int:
        """Support examples per class (classification); support points (regression)."""
        return self.n_support // self.n_way if self.kind == CLASSIFICATION else self.n_support

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.support_x.shape[2:])

    # ------------------------------------------------------------- transforms
    def to(self, *args, **kwargs) -> "Episode":
        """Move every tensor (``Tensor.to`` arguments); floating inputs follow a dtype argument, labels keep int64."""
        def move(t: Tensor) -> Tensor:
            if t.is_floating_point():
                return t.to(*args, **kwargs)
            # labels and uint8 images only change device, never dtype
            device = kwargs.get("device")
            for a in args:
                if isinstance(a, (str, torch.device)):
                    device = a
                elif isinstance(a, Tensor):
                    device = a.device
            return t.to(device=device, non_blocking=kwargs.get("non_blocking", False)) if device is not None else t

        tensors = {name: getattr(self, name) for name in _TENSORS}
        moved = {name: move(t) for name, t in tensors.items()}
        if all(moved[name] is t for name, t in tensors.items()):
            return self  # already there (every training step on CPU): no copy, no second validation
        return replace(self, **moved)

    def pin_memory(self) -> "Episode":
        return replace(self, **{name: getattr(self, name).pin_memory() for name in _TENSORS})

    def task(self, index: int) -> "Episode":
        """Task ``index`` as an episode of batch size 1."""
        return replace(self, **{name: getattr(self, name)[index : index + 1] for name in _TENSORS})

    @staticmethod
    def collate(tasks: Sequence["Episode"]) -> "Episode":
        """Concatenate episodes along the task axis; they must agree in kind, ``n_way`` and shapes."""
        if len(tasks) == 0:
            raise ValueError("Episode.collate needs at least one episode, got an empty sequence")
        first = tasks[0]
        for i, t in enumerate(tasks[1:], start=1):
            if t.kind != first.kind or t.n_way != first.n_way:
                raise ValueError(
                    f"Episode.collate: episode {i} is {t.kind}/{t.n_way}-way but episode 0 is {first.kind}/{first.n_way}-way"
                )
            if t.support_x.shape[1:] != first.support_x.shape[1:] or t.query_x.shape[1:] != first.query_x.shape[1:]:
                raise ValueError(
                    f"Episode.collate: episode {i} has support {_shape(t.support_x)} / query {_shape(t.query_x)}, "
                    f"episode 0 has {_shape(first.support_x)} / {_shape(first.query_x)}"
                )
        return replace(first, **{name: torch.cat([getattr(t, name) for t in tasks]) for name in _TENSORS})

    def __repr__(self) -> str:
        return (
            f"Episode(kind={self.kind}, n_way={self.n_way}, B={self.batch_size}, "
            f"support_x={_shape(self.support_x)} {self.support_x.dtype}, support_y={_shape(self.support_y)}, "
            f"query_x={_shape(self.query_x)}, query_y={_shape(self.query_y)})"
        )
