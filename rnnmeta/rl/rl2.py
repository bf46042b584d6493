"""RL^2 (Duan et al. 2016, "RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning"; Wang et
al. 2016, "Learning to reinforcement learn"): a recurrent policy whose hidden state, carried across
the episodes of a trial and reset between trials, is the learning algorithm.

Input per step ``[B, D]``: observation, previous action, previous reward, previous done flag (see
:mod:`rnnmeta.rl.agent`); a GRU (Duan et al.) or LSTM (the SNAIL paper's "LSTM" row) of
``hidden_size`` units; policy and value heads on its output, or, with ``trunk_sizes``, on a tanh MLP over
``[memory output, current input]``. Trained with PPO and GAE (the paper used TRPO with GAE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnnmeta.rl.agent import SequenceAgent
from rnnmeta.rl.base import TaskFamily, check_positive


class RL2(SequenceAgent):
    """RL^2: a GRU or LSTM policy over the trial. See :class:`~rnnmeta.rl.agent.SequenceAgent` for the training arguments.

    Args:
        cell: ``"gru"`` or ``"lstm"``.
        hidden_size: recurrent units (Duan et al.: 256).
        trunk_sizes: hidden widths of a tanh MLP between the memory and the heads, over the memory's output
            concatenated with the step's input ``[h_t, x_t]``; empty (the default) puts the heads on ``h_t``
            alone. A GRU output read by a linear head is a one-layer controller; locomotion policies are
            usually two tanh layers (MAML's 100 x 100), and the skip of ``x_t`` lets the trunk act on the
            current observation without the memory relaying it.

    Shapes: acting ``x [B, D] -> features [B, F]``; training ``[B, T, D] -> [B, T, F]``, with ``F`` the last of
    ``trunk_sizes``, or ``hidden_size`` without a trunk.
    """

    def __init__(
        self,
        family: TaskFamily,
        n_episodes: int,
        cell: str = "gru",
        hidden_size: int = 256,
        trunk_sizes: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(family, n_episodes, **kwargs)
        if cell not in ("gru", "lstm"):
            raise ValueError(f"RL2: cell must be 'gru' or 'lstm', got cell={cell!r}")
        check_positive("RL2", hidden_size=hidden_size)
        trunk_sizes = list(trunk_sizes)
        if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in trunk_sizes):
            raise ValueError(f"RL2: trunk_sizes must be positive integers, got trunk_sizes={trunk_sizes!r}")
        self.cell, self.hidden_size = cell, hidden_size
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(self.input_size, hidden_size, batch_first=True)
        layers: list[nn.Module] = []
        width = hidden_size + self.input_size
        for w in trunk_sizes:
            layers += [nn.Linear(width, w), nn.Tanh()]
            width = w
        self.trunk: nn.Module | None = nn.Sequential(*layers) if layers else None
        self.build_heads(width if layers else hidden_size)

    def initial_state(self, batch: int) -> Any:
        h = torch.zeros(1, batch, self.hidden_size, device=self.device)
        return h if self.cell == "gru" else (h, torch.zeros_like(h))

    def read_out(self, h: Tensor, x: Tensor) -> Tensor:
        """The heads' input from the memory's output ``h [..., hidden_size]`` and the step's input ``x [..., D]``."""
        return h if self.trunk is None else self.trunk(torch.cat([h, x], dim=-1))

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        out, state = self.rnn(x.unsqueeze(1), state)
        return self.read_out(out[:, 0], x), state

    def features(self, x: Tensor) -> Tensor:
        return self.read_out(self.rnn(x)[0], x)


__all__ = ["RL2"]
