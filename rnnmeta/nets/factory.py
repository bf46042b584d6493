"""Building backbones from a module, a ``class_path`` spec, or the default for a task kind.

Checkpoints store a backbone as its spec ``{"class_path": ..., "init_args": ...}`` (see
:meth:`rnnmeta.learners.MetaLearner.on_save_checkpoint`), so they load with
``torch.load(weights_only=True)`` and rebuild the learner from its hyperparameters.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION
from rnnmeta.nets.conv4 import Conv4
from rnnmeta.nets.mlp import MLP
from rnnmeta.specs import instantiate, is_spec


def default_backbone(
    kind: str, track_running_stats: bool = True, in_channels: int = 1, image_size: int = 28
) -> nn.Module:
    """The embedding a learner uses when given none.

    Classification: :class:`Conv4` with 64 filters on ``image_size`` images. With
    ``track_running_stats=True`` batch norm keeps running statistics, so in ``eval()`` mode every
    example is embedded on its own and queries stay independent; ``False`` always uses the
    statistics of the batch (MAML's transductive setting). Regression: the sinusoid network of
    Finn et al. (2017), ``in_channels -> 40 -> 40`` ReLU.
    """
    if kind == CLASSIFICATION:
        return Conv4(in_channels, 64, image_size, batch_norm=True, track_running_stats=track_running_stats)
    return MLP(in_features=in_channels, hidden=[40, 40], out_features=0)


def backbone_spec(module: nn.Module) -> Optional[dict[str, Any]]:
    """``{"class_path", "init_args"}`` of a module that records its ``init_args`` (rnnmeta's nets do), else None."""
    init_args = getattr(module, "init_args", None)
    if not isinstance(init_args, dict):
        return None
    cls = type(module)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(init_args)}


def resolve_backbone(
    backbone: Union[nn.Module, dict, None], kind: str, track_running_stats: bool = True, **default_kwargs: Any
) -> nn.Module:
    """A module as given, one built from a ``class_path`` spec, or :func:`default_backbone` for ``None``."""
    if backbone is None:
        return default_backbone(kind, track_running_stats, **default_kwargs)
    if isinstance(backbone, nn.Module):
        return backbone
    if is_spec(backbone):
        return instantiate(backbone, "backbone class_path", base=nn.Module)
    raise TypeError(
        f"backbone must be an nn.Module, a {{'class_path': ..., 'init_args': ...}} mapping or None, got {type(backbone).__name__}"
    )


def backbone_features(backbone: nn.Module, embedding_dim: int = 0) -> int:
    """The embedding width: ``backbone.out_features``, else ``embedding_dim``; a clear error if neither is set."""
    if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 0:
        raise ValueError(f"embedding_dim must be an int >= 0 (0: use backbone.out_features), got {embedding_dim!r}")
    width = getattr(backbone, "out_features", None)
    if isinstance(width, int) and width >= 1:
        if embedding_dim and embedding_dim != width:
            raise ValueError(f"embedding_dim={embedding_dim} disagrees with {type(backbone).__name__}.out_features={width}")
        return width
    if embedding_dim >= 1:
        return embedding_dim
    raise ValueError(
        f"the embedding size is unknown: backbone {type(backbone).__name__} has no out_features, so pass embedding_dim >= 1"
    )


def backbone_input_shape(backbone: nn.Module) -> Optional[tuple[int, ...]]:
    """The shape of one example the backbone takes (``MLP``: ``(in_features,)``, ``Conv4``: ``(C, H, W)``), else None.

    A backbone declares it with an ``input_shape`` attribute (a tuple of ints) and, optionally, the
    constructor arguments that set it in ``input_params`` (named in the error of
    :func:`check_backbone_input`).
    """
    shape = getattr(backbone, "input_shape", None)
    return shape if isinstance(shape, tuple) and all(isinstance(s, int) for s in shape) else None


def check_backbone_input(backbone: nn.Module, x: Tensor, name: str, owner: str = "") -> None:
    """Refuse inputs ``x [B, N, *x_shape]`` whose example shape is not the backbone's :func:`backbone_input_shape`.

    Every learner runs this on its support and query inputs before any computation, so a mismatch
    fails with the parameter to change, not deep inside torch.

    Args:
        backbone: the embedding network.
        x: the inputs, ``[B, N, *x_shape]``.
        name: the argument's name in the message (``"support_x"``, ``"query_x"``).
        owner: who checks (a learner's class name), put in front of the message.

    Raises:
        ValueError: ``x.shape[2:]`` differs from the backbone's input shape; names the backbone's
            parameters that set it (``in_features``; ``in_channels``/``image_size``).
    """
    dims = getattr(backbone, "example_dims", None)
    if isinstance(dims, int) and not isinstance(dims, bool) and x.dim() >= 2 and x.dim() - 2 != dims:
        # text encoders: [L] word ids, or [L, 1 + max_ngrams] with character n-grams (subword_buckets)
        buckets = getattr(backbone, "subword_buckets", None)
        data = "word ids [L] (data with subword_buckets=0)" if x.dim() == 3 else (
            f"[L, 1 + max_ngrams] = {list(x.shape[2:])} ids (data with subword_buckets > 0)" if x.dim() == 4 else "")
        raise ValueError(
            f"{f'{owner}: ' if owner else ''}the backbone {type(backbone).__name__} (subword_buckets={buckets}) reads "
            f"examples of {dims} dimension(s) but {name} {list(x.shape)} has examples {list(x.shape[2:])}"
            f"{f' -- {data}' if data else ''}; set the backbone's subword_buckets to the dataset's subword_buckets"
        )
    expected = backbone_input_shape(backbone)
    if expected is None or x.dim() < 2 or tuple(x.shape[2:]) == expected:
        return
    params = getattr(backbone, "input_params", ())
    settings = ", ".join(f"{p}={getattr(backbone, p, '?')}" for p in params)
    fix = "give a backbone that takes the data's examples"
    if params:
        fix = f"set the backbone's {'/'.join(params)} to match the data"
    raise ValueError(
        f"{f'{owner}: ' if owner else ''}the backbone {type(backbone).__name__} expects examples {list(expected)}"
        f"{f' ({settings})' if settings else ''} but {name} has examples {list(x.shape[2:])} "
        f"({name} {list(x.shape)}); {fix}"
    )
