"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), as a pair of pure functions.

"Learning to learn by gradient descent by gradient descent" (Andrychowicz, Denil, Gomez,
Hoffman, Pfau, Schaul, Shillingford & de Freitas, NeurIPS 2016) replaces a hand-designed update
rule by a small recurrent network ``m_phi`` applied to every coordinate of the optimizee's
parameters independently, with the same weights for every coordinate::

    theta_{t+1} = theta_t + g_t,    [g_t, h_{t+1}] = m_phi(preprocess(grad_t), h_t)

The module holds only the meta-parameters ``phi``; the per-coordinate recurrent state lives
outside it, in the pure ``init``/``update`` pair of :class:`~rnnmeta.optim.base.MetaOptimizer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from rnnmeta.optim.base import CoordinateState, MetaOptimizer, flatten, register_meta_optimizer, unflatten

def preprocess_gradients(grad: Tensor, p: float = 10.0) -> Tensor:
    """Log-magnitude and sign preprocessing of Andrychowicz et al. (2016), Appendix A.

    Each coordinate ``g`` becomes two inputs::

        (log|g| / p, sign(g))   if |g| >= exp(-p)
        (-1,         exp(p) g)  otherwise

    Args:
        grad: any shape ``[*]``.
        p: the constant ``p > 0`` (10 in the paper).

    Returns:
        ``[*, 2]``, same dtype as ``grad``.
    """
    if not p > 0:
        raise ValueError(f"preprocessing constant p must be > 0, got {p}")
    threshold = math.exp(-p)
    big = grad.abs() >= threshold
    # clamp inside the log so the unused branch never produces -inf (and NaN gradients)
    log_mag = torch.log(grad.abs().clamp_min(threshold)) / p
    first = torch.where(big, log_mag, torch.full_like(grad, -1.0))
    second = torch.where(big, torch.sign(grad), grad * math.exp(p))
    return torch.stack([first, second], dim=-1)


@dataclass
class LSTMOptimizerState(CoordinateState):
    """State of :class:`CoordinatewiseLSTMOptimizer` for ``N`` coordinates (all parameters flattened).

    Attributes:
        hidden: ``[num_layers, N, hidden_size]`` hidden states of the stacked LSTM.
        cell: ``[num_layers, N, hidden_size]`` cell states.
    """

    coord_dim = 1
    hidden: Tensor
    cell: Tensor


@register_meta_optimizer
class CoordinatewiseLSTMOptimizer(MetaOptimizer):
    """Andrychowicz et al. (2016): a 2-layer LSTM applied to each coordinate, shared by all.

    Every coordinate of every parameter is a row of one batch: the gradient coordinate,
    preprocessed to 2 inputs (:func:`preprocess_gradients`), goes through ``num_layers`` LSTM cells
    and a linear read-out to one number, times the output scale. The read-out starts at zero (as in
    the authors' quadratic setup), so an untrained optimizer leaves the parameters where they are.

    Args:
        hidden_size: LSTM units per layer (20 in the paper).
        num_layers: stacked LSTM layers (2 in the paper).
        preprocess_p: the constant ``p`` of the log/sign preprocessing (10 in the paper); 0 feeds
            the raw gradient as a single input.
        output_scale: the update is ``output_scale * linear(h)`` (0.1 in the paper).
        learn_output_scale: make the output scale a meta-parameter (learned in log space).

    Shapes:
        ``init(params)`` for parameters with ``N`` coordinates in all returns state tensors
        ``[num_layers, N, hidden_size]``; ``update`` returns updates shaped like ``grads``.
    """

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        preprocess_p: float = 10.0,
        output_scale: float = 0.1,
        learn_output_scale: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size} and {num_layers}")
        if preprocess_p < 0:
            raise ValueError(f"preprocess_p must be >= 0 (0 disables preprocessing), got {preprocess_p}")
        if not output_scale > 0:
            raise ValueError(f"output_scale must be > 0, got {output_scale}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.preprocess_p = float(preprocess_p)
        self.learn_output_scale = learn_output_scale
        in_features = 2 if preprocess_p > 0 else 1
        self.cells = nn.ModuleList(
            [nn.LSTMCell(in_features if i == 0 else hidden_size, hidden_size) for i in range(num_layers)]
        )
        self.readout = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        log_scale = torch.tensor(math.log(output_scale))
        if learn_output_scale:
            self.log_output_scale = nn.Parameter(log_scale)
        else:
            self.log_output_scale: Tensor
            self.register_buffer("log_output_scale", log_scale)

    @property
    def output_scale(self) -> Tensor:
        return self.log_output_scale.exp()

    def config(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "preprocess_p": self.preprocess_p,
            "output_scale": float(self.output_scale.detach()),
            "learn_output_scale": self.learn_output_scale,
        }

    def init(self, params: Sequence[Tensor]) -> LSTMOptimizerState:
        """Zero hidden and cell states for every coordinate of ``params`` (detached plain tensors)."""
        n = sum(p.numel() for p in params)
        ref = params[0]
        zeros = torch.zeros(self.num_layers, n, self.hidden_size, dtype=ref.dtype, device=ref.device)
        return LSTMOptimizerState(hidden=zeros, cell=zeros.clone())

    def update(
        self,
        grads: Sequence[Tensor],
        state: LSTMOptimizerState,
        params: Optional[Sequence[Tensor]] = None,
        loss: Optional[Tensor] = None,
    ) -> tuple[list[Tensor], LSTMOptimizerState]:
        """One step for all coordinates at once.

        Args:
            grads: gradients shaped like the parameters (``N`` coordinates in all).
            state: from :meth:`init` or a previous :meth:`update`.
            params: unused (the update of Andrychowicz et al. sees only gradients).
            loss: unused.

        Returns:
            ``(updates, new_state)``: updates shaped like ``grads``.
        """
        flat = flatten(grads)
        if state.hidden.shape[1] != flat.numel():
            raise ValueError(
                f"optimizer state holds {state.hidden.shape[1]} coordinates but the gradients have {flat.numel()}; "
                "call init(params) for these parameters"
            )
        x = preprocess_gradients(flat, self.preprocess_p) if self.preprocess_p > 0 else flat.unsqueeze(-1)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            x, c = cell(x, (state.hidden[layer], state.cell[layer]))
            hs.append(x)
            cs.append(c)
        step = self.readout(x).squeeze(-1) * self.output_scale
        return unflatten(step, grads), LSTMOptimizerState(torch.stack(hs), torch.stack(cs))
