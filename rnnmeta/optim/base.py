"""What a learned optimizer is in rnnmeta: :class:`MetaOptimizer`, a learned update rule.

"Optimizer" in :mod:`rnnmeta.optim` means one thing: a module holding meta-parameters, with two
pure functions over the optimizee's parameters (as in Optax and torchopt)::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params, loss)
    params = apply_updates(params, updates)

The rules (:class:`~rnnmeta.optim.CoordinatewiseLSTMOptimizer`,
:class:`~rnnmeta.optim.RaviLarochelleUpdate`) subclass it; :class:`~rnnmeta.optim.LSTMOptimizer`
wraps one as a ``torch.optim.Optimizer`` for any model. Checkpoints (:meth:`MetaOptimizer.save`,
:func:`load_meta_optimizer`) hold only tensors and plain values (``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CoordinateState",
    "MetaOptimizer",
    "apply_updates",
    "flatten",
    "load_meta_optimizer",
    "register_meta_optimizer",
    "unflatten",
]

PathLike = Union[str, Path]

#: Format tag written into every checkpoint saved by :meth:`MetaOptimizer.save`.
CHECKPOINT_FORMAT = "rnnmeta.learned_optimizer/1"


def apply_updates(params: Sequence[Tensor], updates: Sequence[Tensor]) -> list[Tensor]:
    """``[p + u for p, u in zip(params, updates)]`` (out of place, so the graph is kept)."""
    if len(params) != len(updates):
        raise ValueError(f"apply_updates: {len(params)} params but {len(updates)} updates")
    return [p + u for p, u in zip(params, updates)]


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one flat vector ``[N]`` (N = total number of coordinates)."""
    if len(tensors) == 0:
        raise ValueError("expected at least one tensor, got an empty sequence")
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat vector ``[N]`` back into tensors shaped like ``like``."""
    sizes = [t.numel() for t in like]
    if flat.numel() != sum(sizes):
        raise ValueError(f"cannot split {flat.numel()} coordinates into tensors of sizes {sizes}")
    return [chunk.view_as(t) for chunk, t in zip(flat.split(sizes), like)]


class CoordinateState:
    """Base of a rule's state dataclass: tensor fields whose axis ``coord_dim`` indexes the coordinates."""

    coord_dim = 0

    def detach(self) -> Any:
        """The same state cut from the graph (used between truncations of an unroll)."""
        return type(self)(*(t.detach() for t in vars(self).values()))

    @classmethod
    def cat(cls, states: Sequence[Any]) -> Any:
        """The states of several parameter sets as one state (coordinates joined in order)."""
        return cls(*(torch.cat(ts, cls.coord_dim) for ts in zip(*(vars(s).values() for s in states))))

    def split(self, sizes: Sequence[int]) -> list[Any]:
        """The inverse of :meth:`cat`: one state per block of ``sizes[i]`` coordinates (views)."""
        return [type(self)(*ts) for ts in zip(*(t.split(list(sizes), self.coord_dim) for t in vars(self).values()))]


class MetaOptimizer(nn.Module):
    """A learned update rule: meta-parameters in the module, optimizer state outside it.

    Subclasses implement :meth:`init` and :meth:`update` as pure functions of their arguments
    (and of the module's parameters), and list their constructor arguments in ``config()`` so a
    checkpoint rebuilds them.
    """

    def init(self, params: Sequence[Tensor]) -> Any:
        """The optimizer state for ``params`` before the first step (plain tensors)."""
        raise NotImplementedError

    def update(
        self, grads: Sequence[Tensor], state: Any, params: Optional[Sequence[Tensor]] = None, loss: Optional[Tensor] = None
    ) -> tuple[list[Tensor], Any]:
        """One step: ``(updates, new_state)``; new parameters are ``params[i] + updates[i]``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Constructor arguments (ints, floats, bools) that rebuild this module."""
        raise NotImplementedError

    def save(self, path: PathLike) -> Path:
        """Save the meta-trained optimizer (class name, constructor arguments, weights) to ``path``.

        The file holds only tensors and plain Python values, so it loads with
        ``torch.load(path, weights_only=True)``; see :func:`load_meta_optimizer`.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "class": type(self).__name__,
            "config": self.config(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        return path


_REGISTRY: dict[str, type] = {}


def register_meta_optimizer(cls: type) -> type:
    """Make a :class:`MetaOptimizer` subclass loadable by :func:`load_meta_optimizer`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def load_meta_optimizer(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> MetaOptimizer:
    """Rebuild a meta-trained optimizer saved by :meth:`MetaOptimizer.save` (``weights_only=True``)."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a learned-optimizer checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
            "save one with MetaOptimizer.save(path) or rnnmeta.optim.meta_train"
        )
    name = payload["class"]
    if name not in _REGISTRY:
        raise ValueError(f"{path} holds an optimizer of unknown class {name!r}; known: {sorted(_REGISTRY)}")
    module = _REGISTRY[name](**payload["config"])
    module.load_state_dict(payload["state_dict"])
    return module
