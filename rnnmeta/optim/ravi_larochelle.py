"""The meta-learner LSTM update of Ravi & Larochelle (2017), as a pair of pure functions.

"Optimization as a model for few-shot learning" (Ravi & Larochelle, ICLR 2017) reads gradient
descent as the cell update of an LSTM whose cell state is the learner's parameters::

    c_t = f_t * c_{t-1} + i_t * (-grad_t)        (c_t = theta_t)
    i_t = sigmoid(W_I . [grad_t, L_t, theta_{t-1}, i_{t-1}] + b_I)
    f_t = sigmoid(W_F . [grad_t, L_t, theta_{t-1}, f_{t-1}] + b_F)

With ``f_t = 1`` and ``i_t = lr`` this is plain gradient descent; the learned gates give each
coordinate an adaptive learning rate (``i_t``) and weight shrinkage (``f_t``). The gates are
computed coordinatewise with weights shared by all coordinates; gradient and loss enter through
the log/sign preprocessing of Andrychowicz et al. (2016), as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from rnnmeta.optim.base import CoordinateState, MetaOptimizer, flatten, register_meta_optimizer, unflatten
from rnnmeta.optim.lstm_optimizer import preprocess_gradients


@dataclass
class RaviLarochelleState(CoordinateState):
    """Previous gates of :class:`RaviLarochelleUpdate` for ``N`` coordinates.

    Attributes:
        input_gate: ``[N]`` the previous ``i_{t-1}`` (zeros before the first step).
        forget_gate: ``[N]`` the previous ``f_{t-1}`` (zeros before the first step).
    """

    input_gate: Tensor
    forget_gate: Tensor


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@register_meta_optimizer
class RaviLarochelleUpdate(MetaOptimizer):
    """Ravi & Larochelle (2017): learned input and forget gates around a gradient step.

    Each coordinate's gate input is ``[preprocess(grad) (2), preprocess(loss) (2), theta (1),
    previous gate (1)]`` (6 numbers); each gate has 6 weights and a bias shared by every
    coordinate. The weights start small (uniform in +-0.01, as in the paper) and the biases at
    ``logit(init_input_gate)`` and ``init_forget_bias``, so the untrained update is close to
    gradient descent with learning rate ``init_input_gate``.

    Args:
        init_input_gate: the input gate (learning rate) at initialisation, in (0, 1).
        init_forget_bias: the forget-gate bias at initialisation (the paper uses 4 to 6, so
            ``f`` starts near 1).
        preprocess_p: the constant ``p`` of the gradient and loss preprocessing.
        fixed_input_gate: force ``i_t`` to this constant (the gate's weights are then unused).
        fixed_forget_gate: force ``f_t`` to this constant. With ``fixed_forget_gate=1`` and
            ``fixed_input_gate=lr`` the update is exactly SGD with learning rate ``lr``.

    Shapes:
        ``init(params)`` returns gate tensors ``[N]`` for ``N`` coordinates; ``update`` needs
        ``params`` (the cell state) and takes ``loss`` as a scalar (``None`` feeds zeros).
    """

    def __init__(
        self,
        init_input_gate: float = 0.01,
        init_forget_bias: float = 5.0,
        preprocess_p: float = 10.0,
        fixed_input_gate: Optional[float] = None,
        fixed_forget_gate: Optional[float] = None,
    ) -> None:
        super().__init__()
        if not 0 < init_input_gate < 1:
            raise ValueError(f"init_input_gate must lie in (0, 1), got {init_input_gate}")
        if not preprocess_p > 0:
            raise ValueError(f"preprocess_p must be > 0, got {preprocess_p}")
        for name, value in (("fixed_input_gate", fixed_input_gate), ("fixed_forget_gate", fixed_forget_gate)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number or None, got {value}")
        self.init_input_gate = float(init_input_gate)
        self.init_forget_bias = float(init_forget_bias)
        self.preprocess_p = float(preprocess_p)
        self.fixed_input_gate = fixed_input_gate
        self.fixed_forget_gate = fixed_forget_gate
        self.input_weight = nn.Parameter(torch.empty(6).uniform_(-0.01, 0.01))
        self.input_bias = nn.Parameter(torch.tensor(_logit(init_input_gate)))
        self.forget_weight = nn.Parameter(torch.empty(6).uniform_(-0.01, 0.01))
        self.forget_bias = nn.Parameter(torch.tensor(float(init_forget_bias)))

    @classmethod
    def sgd(cls, lr: float) -> "RaviLarochelleUpdate":
        """The update forced to plain gradient descent: ``f = 1``, ``i = lr``."""
        return cls(fixed_input_gate=lr, fixed_forget_gate=1.0)

    def config(self) -> dict[str, Any]:
        return {
            "init_input_gate": self.init_input_gate,
            "init_forget_bias": self.init_forget_bias,
            "preprocess_p": self.preprocess_p,
            "fixed_input_gate": self.fixed_input_gate,
            "fixed_forget_gate": self.fixed_forget_gate,
        }

    def init(self, params: Sequence[Tensor]) -> RaviLarochelleState:
        """Zero previous gates for every coordinate of ``params``."""
        n = sum(p.numel() for p in params)
        zeros = torch.zeros(n, dtype=params[0].dtype, device=params[0].device)
        return RaviLarochelleState(input_gate=zeros, forget_gate=zeros.clone())

    def update(
        self,
        grads: Sequence[Tensor],
        state: RaviLarochelleState,
        params: Optional[Sequence[Tensor]] = None,
        loss: Optional[Tensor] = None,
    ) -> tuple[list[Tensor], RaviLarochelleState]:
        """One step ``theta_t = f_t * theta_{t-1} - i_t * grad_t``, returned as ``theta_t - theta_{t-1}``.

        Args:
            grads: gradients shaped like ``params`` (``N`` coordinates in all).
            state: from :meth:`init` or a previous :meth:`update`.
            params: the current parameters ``theta_{t-1}`` (required: they are the cell state).
            loss: the learner's current loss, a scalar (or one element), or ``[N]`` one loss per
                coordinate (several learners updated in one call, each coordinate reading its own
                learner's loss); ``None`` feeds zeros.

        Returns:
            ``(updates, new_state)`` with ``updates = (f_t - 1) * theta_{t-1} - i_t * grad_t``,
            so that ``params + updates`` is the new cell state.
        """
        if params is None:
            raise ValueError("RaviLarochelleUpdate.update needs params: the parameters are the LSTM cell state")
        g = flatten(grads)
        theta = flatten(params)
        if g.shape != theta.shape or state.input_gate.shape != g.shape:
            raise ValueError(
                f"grads ({g.numel()} coordinates), params ({theta.numel()}) and state ({state.input_gate.numel()}) "
                "must describe the same coordinates; call init(params) for these parameters"
            )
        i_gate = self._gate(self.fixed_input_gate, self.input_weight, self.input_bias, g, theta, loss, state.input_gate)
        f_gate = self._gate(self.fixed_forget_gate, self.forget_weight, self.forget_bias, g, theta, loss, state.forget_gate)
        step = (f_gate - 1) * theta - i_gate * g
        return unflatten(step, grads), RaviLarochelleState(i_gate, f_gate)

    def _gate(
        self,
        fixed: Optional[float],
        weight: Tensor,
        bias: Tensor,
        g: Tensor,
        theta: Tensor,
        loss: Optional[Tensor],
        previous: Tensor,
    ) -> Tensor:
        if fixed is not None:
            return torch.full_like(g, fixed)
        if loss is None:
            loss_feat = g.new_zeros(2)
        else:
            loss = torch.as_tensor(loss, dtype=g.dtype, device=g.device)
            if loss.numel() not in (1, g.numel()):
                raise ValueError(
                    f"loss must be a scalar or one value per coordinate ({g.numel()}) for RaviLarochelleUpdate, "
                    f"got shape {tuple(loss.shape)}"
                )
            loss_feat = preprocess_gradients(loss.reshape(() if loss.numel() == 1 else -1), self.preprocess_p)
        w = weight.to(g.dtype)
        pre = (
            preprocess_gradients(g, self.preprocess_p) @ w[:2]
            + loss_feat @ w[2:4]
            + theta * w[4]
            + previous * w[5]
            + bias.to(g.dtype)
        )
        return torch.sigmoid(pre)
