"""A meta-trained update rule as an ordinary ``torch.optim.Optimizer`` for any ``nn.Module``.

::

    opt = LSTMOptimizer.from_checkpoint(model.parameters(), "quadratic_lstm.pt")
    for x, y in data:
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()

The meta-parameters are frozen here (the update runs under ``torch.no_grad``); the per-coordinate
state of the learned rule lives in ``self.state[p]`` as plain tensors, so ``state_dict()`` /
``load_state_dict()`` work as for any torch optimizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Optional, Union

import torch
from torch import Tensor

from rnnmeta.optim.base import MetaOptimizer, PathLike, load_meta_optimizer


class LSTMOptimizer(torch.optim.Optimizer):
    """Train a model with a learned update rule (Andrychowicz et al. 2016; Ravi & Larochelle 2017).

    Each parameter is updated by ``meta_optimizer.update([p.grad], state, [p], loss)``; the rule
    is coordinatewise, so updating parameters one at a time gives the same result as updating
    them together. When ``step`` gets a closure, its loss is passed to the rule (the
    Ravi & Larochelle gates read it); otherwise the rule sees no loss.

    Args:
        params: parameters or parameter groups, as for any torch optimizer.
        meta_optimizer: a :class:`~rnnmeta.optim.MetaOptimizer` (coordinatewise LSTM or
            Ravi & Larochelle update), typically meta-trained by :func:`rnnmeta.optim.meta_train`.
    """

    def __init__(self, params: Iterable[Union[Tensor, dict[str, Any]]], meta_optimizer: MetaOptimizer) -> None:
        if not isinstance(meta_optimizer, MetaOptimizer):
            raise TypeError(
                f"meta_optimizer must be an rnnmeta.optim.MetaOptimizer, got {type(meta_optimizer).__name__}"
            )
        super().__init__(params, defaults={})
        self.meta_optimizer = meta_optimizer
        weights = list(meta_optimizer.parameters()) + list(meta_optimizer.buffers())
        self._dtype = weights[0].dtype if weights else torch.get_default_dtype()
        self._state_cls: Optional[type] = None

    @classmethod
    def from_checkpoint(
        cls, params: Iterable[Union[Tensor, dict[str, Any]]], path: PathLike, map_location: Union[str, torch.device] = "cpu"
    ) -> "LSTMOptimizer":
        """Build the optimizer from a file written by :meth:`MetaOptimizer.save` / ``meta_train``."""
        return cls(params, load_meta_optimizer(path, map_location=map_location))

    def _rule_state(self, p: Tensor, value: Tensor) -> Any:
        """The rule's state for ``p`` (fresh from ``init`` on its first step)."""
        st = self.state[p]
        if "step" not in st:
            st["step"] = 0
            return self.meta_optimizer.init([value])
        if self._state_cls is None:
            self._state_cls = type(self.meta_optimizer.init([value.new_zeros(1)]))
        return self._state_cls(**{f.name: st[f.name] for f in dataclasses.fields(self._state_cls)})

    def _store(self, p: Tensor, rule_state: Any) -> None:
        st = self.state[p]
        for f in dataclasses.fields(rule_state):
            st[f.name] = getattr(rule_state, f.name)
        st["step"] += 1

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Tensor]] = None) -> Optional[Tensor]:  # type: ignore[override]
        """Apply one learned update to every parameter that has a gradient.

        All parameters on one device go through the rule in one call (their coordinates joined,
        which is exact: the rule is coordinatewise), not one call per parameter tensor.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        loss_in = None if loss is None else loss.detach().to(self._dtype).reshape(())
        by_device: dict[torch.device, list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LSTMOptimizer does not support sparse gradients")
                by_device.setdefault(p.device, []).append(p)
        for device, params in by_device.items():
            if next(iter(self.meta_optimizer.parameters()), params[0]).device != device:
                self.meta_optimizer.to(device)
            grads = [p.grad.to(self._dtype) for p in params]
            values = [p.detach().to(self._dtype) for p in params]
            states = [self._rule_state(p, v) for p, v in zip(params, values)]
            loss_dev = None if loss_in is None else loss_in.to(device)
            joinable = hasattr(states[0], "cat") and hasattr(states[0], "split")
            if joinable and len(params) > 1:
                updates, joined = self.meta_optimizer.update(grads, type(states[0]).cat(states), values, loss_dev)
                new_states = joined.split([v.numel() for v in values])
            else:  # a rule whose state cannot be joined: one call per parameter
                updates, new_states = [], []
                for g, s, v in zip(grads, states, values):
                    (u,), ns = self.meta_optimizer.update([g], s, [v], loss_dev)
                    updates.append(u)
                    new_states.append(ns)
            for p, update, rule_state in zip(params, updates, new_states):
                p.add_(update.to(p.dtype))
                self._store(p, rule_state)
        return loss
