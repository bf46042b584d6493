"""MAML's task-batched path: ``B`` tasks with their own weights in one pass (an interpreter for Conv4 and MLP).

Each parameter is stacked into ``[B, *shape]``. A convolution runs once for all tasks as a
grouped convolution (tasks as groups: activations ``[N, B*C, H, W]``, ``groups=B``); batch norm
over that layout normalises each task's channels with the task's own statistics; linear layers
are batched matmuls. :class:`~rnnmeta.learners.MAML` uses it by default for an
:class:`~rnnmeta.nets.MLP` backbone and with ``batch_tasks=True`` for Conv4 (docs/MAML.md); any
other backbone (:func:`batched_layers` returns None) runs task by task.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.nets import MLP, Conv4

__all__ = ["Params", "batched_forward", "batched_layers"]

#: Weights by parameter name (``backbone.layers.0.weight``, ``head.bias``), unstacked or ``[B, *shape]``.
Params = dict[str, Tensor]


def batched_layers(backbone: nn.Module, head: nn.Linear) -> Optional[list[tuple[str, nn.Module]]]:
    """``(name prefix, layer)`` in execution order when every layer can run task-batched, else None."""
    if isinstance(backbone, Conv4):
        layers = [(f"backbone.blocks.{i}", m) for i, m in enumerate(backbone.blocks)]
    elif isinstance(backbone, MLP):
        layers = [(f"backbone.layers.{i}", m) for i, m in enumerate(backbone.layers)]
    else:
        return None
    ok = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.MaxPool2d)
    if not all(isinstance(m, ok) for _, m in layers):
        return None
    if any(isinstance(m, nn.Conv2d) and (m.padding_mode != "zeros" or m.groups != 1) for _, m in layers):
        return None
    return layers + [("head", head)]


def batched_forward(layers: list[tuple[str, nn.Module]], params: Params, x: Tensor) -> Tensor:
    """Run ``B`` tasks with their own weights at once.

    Args:
        layers: from :func:`batched_layers`.
        params: name -> ``[B, *shape]`` stacked task weights.
        x: ``[B, N, *x_shape]`` inputs (images ``[B, N, C, H, W]`` or features ``[B, N, F]``).

    Returns:
        ``[B, N, out]``.
    """
    B, N = x.shape[:2]
    if x.dim() == 5:  # images: tasks become channel groups, [N, B*C, H, W]
        x = x.transpose(0, 1).reshape(N, B * x.shape[2], *x.shape[3:])
    for name, m in layers:
        if isinstance(m, nn.Conv2d):
            w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
            x = F.conv2d(
                x, w.flatten(0, 1), None if b is None else b.flatten(), m.stride, m.padding, m.dilation, groups=B
            )
        elif isinstance(m, nn.BatchNorm2d):
            # per (task, channel) statistics over the task's own images: batch norm in training mode
            w, b = params.get(f"{name}.weight"), params.get(f"{name}.bias")
            x = F.batch_norm(
                x, None, None, None if w is None else w.flatten(), None if b is None else b.flatten(), True, 0.0, m.eps
            )
        elif isinstance(m, nn.Linear):
            if x.dim() == 4:  # leave the conv layout: [N, B*C, h, w] -> [B, N, C*h*w]
                x = x.reshape(N, B, -1).transpose(0, 1)
            w, b = params[f"{name}.weight"], params.get(f"{name}.bias")
            out = torch.bmm(x, w.transpose(1, 2))
            x = out if b is None else out + b.unsqueeze(1)
        else:  # ReLU, MaxPool2d act on any layout
            x = m(x)
    return x
