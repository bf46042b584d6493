"""Pieces the learners share: the label slot of sequence steps, batched embedding, input checks.

The sequence learners (SNAIL, LSTMLearner, MANN) feed each step as ``[embed(x), label slot]``;
every learner's predictor (what :meth:`~rnnmeta.learners.MetaLearner.adapt` returns) checks its
queries against the adapted support set with :func:`check_query`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION

__all__ = ["check_positive", "check_query", "embed", "encode_labels", "label_width"]


def label_width(kind: str, n_way: int, target_dim: int) -> int:
    """Width of the label slot of a step: ``n_way`` one-hot, or ``target_dim`` targets plus a given-flag."""
    return n_way if kind == CLASSIFICATION else target_dim + 1


def encode_labels(y: Tensor, kind: str, n_way: int) -> Tensor:
    """Label slot of support steps.

    Args:
        y: ``[B, S]`` int64 labels (classification) or ``[B, S, d_y]`` float targets.

    Returns:
        ``[B, S, n_way]`` one-hot, or ``[B, S, d_y + 1]`` targets with a trailing ``1`` flag.
    """
    if kind == CLASSIFICATION:
        return F.one_hot(y, n_way).float()
    return torch.cat([y, torch.ones_like(y[..., :1])], dim=-1)


def embed(backbone: nn.Module, x: Tensor, n_lead: int = 2) -> Tensor:
    """Embed ``x [*lead, *x_shape]`` (``n_lead`` leading dims) to ``[*lead, E]`` in one backbone call."""
    lead = x.shape[:n_lead]
    e = backbone(x.reshape(-1, *x.shape[n_lead:]))
    return e.reshape(*lead, e.shape[-1])


def check_query(support_x: Tensor, query_x: Tensor) -> None:
    """Refuse ``query_x`` unless it is ``[B, M, *x_shape]`` matching ``support_x [B, S, *x_shape]``.

    ``support_x`` may be an empty slice ``support_x[:, :0]`` kept by a predictor as a shape reference.

    Raises:
        TypeError: ``query_x`` is not a tensor.
        ValueError: names both shapes.
    """
    if not isinstance(query_x, Tensor):
        raise TypeError(f"query_x must be a torch.Tensor, got {type(query_x).__name__}")
    if query_x.dim() != support_x.dim() or query_x.shape[0] != support_x.shape[0] or query_x.shape[2:] != support_x.shape[2:]:
        raise ValueError(
            f"query_x must be [B={support_x.shape[0]}, M, *{list(support_x.shape[2:])}] like the adapted support set, "
            f"got {list(query_x.shape)}"
        )


def check_positive(**values: int) -> None:
    """Raise ``ValueError`` naming every argument that is not a positive integer."""
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
