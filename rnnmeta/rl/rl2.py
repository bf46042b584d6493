"""RL^2 (Duan et al. 2016, "RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning"; Wang et
al. 2016, "Learning to reinforcement learn"): a recurrent policy whose hidden state, carried across
the episodes of a trial and reset between trials, is the learning algorithm.

Input per step ``[B, D]``: observation, previous action, previous reward, previous done flag (see
:mod:`rnnmeta.rl.agent`); a GRU (Duan et al.) or LSTM (the SNAIL paper's "LSTM" row) of
``hidden_size`` units; policy and value heads on its output. Trained with PPO and GAE (the paper
used TRPO with GAE).
"""

from __future__ import annotations

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

    Shapes: acting ``x [B, D] -> features [B, hidden_size]``; training ``[B, T, D] -> [B, T, hidden_size]``.
    """

    def __init__(
        self,
        family: TaskFamily,
        n_episodes: int,
        cell: str = "gru",
        hidden_size: int = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(family, n_episodes, **kwargs)
        if cell not in ("gru", "lstm"):
            raise ValueError(f"RL2: cell must be 'gru' or 'lstm', got cell={cell!r}")
        check_positive("RL2", hidden_size=hidden_size)
        self.cell, self.hidden_size = cell, hidden_size
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(self.input_size, hidden_size, batch_first=True)
        self.build_heads(hidden_size)

    def initial_state(self, batch: int) -> Any:
        h = torch.zeros(1, batch, self.hidden_size, device=self.device)
        return h if self.cell == "gru" else (h, torch.zeros_like(h))

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        out, state = self.rnn(x.unsqueeze(1), state)
        return out[:, 0], state

    def features(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]


__all__ = ["RL2"]
