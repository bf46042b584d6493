"""Batch norm that takes its statistics from a reference part of the batch (the support set).

MAML (Finn et al. 2017) normalises the query pass with the batch statistics of the queries
themselves, so a query's prediction depends on the other queries of its task: the evaluation is
*transductive*. To answer every query on its own while keeping per-task batch statistics, the
query pass can run on ``cat([support_x, query_x])`` with every batch-norm layer normalising the
whole input with the mean and (biased) variance of the support rows only::

    with reference_batch_norm(backbone, n_reference=S):
        feats = backbone(torch.cat([support_x, query_x]))[S:]

Each query then sees the support set's statistics (the same statistics the last inner step used)
and nothing of the other queries. Works inside :func:`torch.func.functional_call` (the layers read
their weights when called) and keeps the graph for meta-gradients.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["QUERY_BN_MODES", "batch_norm_layers", "check_query_bn", "reference_batch_norm", "require_batch_statistics"]

#: How a learner with an inner loop normalises its query pass: over the query batch, or with the support set's statistics.
QUERY_BN_MODES = ("transductive", "support")


def batch_norm_layers(module: nn.Module) -> list[_BatchNorm]:
    """The batch-norm layers (``BatchNorm1d/2d/3d``) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def require_batch_statistics(backbone: nn.Module, owner: str) -> None:
    """Refuse a backbone whose batch norm keeps running statistics (an inner loop needs each task's own).

    Raises:
        ValueError: names the layer (``backbone.<name>``) and the fix.
    """
    for name, m in backbone.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            raise ValueError(
                f"backbone.{name} tracks running statistics; {owner}'s inner loop uses per-task batch statistics "
                "(as MAML): build it with track_running_stats=False"
            )


def check_query_bn(query_bn: str) -> str:
    """``query_bn`` if it is one of :data:`QUERY_BN_MODES`; else ``ValueError`` naming it."""
    if query_bn not in QUERY_BN_MODES:
        raise ValueError(f"query_bn must be 'transductive' or 'support', got {query_bn!r}")
    return query_bn


def _reference_forward(layer: _BatchNorm, n_reference: int):
    def forward(x: Tensor) -> Tensor:
        if x.shape[0] <= n_reference:
            raise ValueError(
                f"reference_batch_norm: input has {x.shape[0]} rows, expected the {n_reference} reference rows "
                "followed by at least one row to normalise"
            )
        dims = [0, *range(2, x.dim())]
        ref = x[:n_reference]
        mean = ref.mean(dims, keepdim=True)
        var = ref.var(dims, unbiased=False, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + layer.eps)
        if layer.affine:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * layer.weight.view(shape) + layer.bias.view(shape)
        return y

    return forward


@contextmanager
def reference_batch_norm(module: nn.Module, n_reference: int) -> Iterator[None]:
    """Within the block, each batch norm of ``module`` uses the statistics of the first ``n_reference`` rows.

    The layers must not track running statistics (they always normalise with batch statistics,
    as MAML's do). Running statistics would be neither read nor updated inside the block.

    Raises:
        ValueError: ``n_reference < 1``, or a layer tracks running statistics.
    """
    if isinstance(n_reference, bool) or not isinstance(n_reference, int) or n_reference < 1:
        raise ValueError(f"n_reference must be an int >= 1, got {n_reference!r}")
    layers = batch_norm_layers(module)
    for layer in layers:
        if layer.track_running_stats:
            raise ValueError(f"reference_batch_norm needs batch norm without running statistics, got {layer}")
    for layer in layers:
        layer.forward = _reference_forward(layer, n_reference)  # instance attribute shadows the class's forward
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward
