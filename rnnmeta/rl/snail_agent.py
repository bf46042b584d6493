"""SNAIL as a meta-RL agent (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner", Section 4.3 and
Appendix): temporal-convolution and causal attention blocks over the steps of the trial.

The blocks are :mod:`rnnmeta.learners.snail_blocks`' :class:`DenseBlock`, :class:`TCBlock` and
:class:`AttentionBlock`. Training reads whole trials ``[B, T, D]`` with their ``forward``; acting
steps incrementally from a cache, never re-reading the trial: per dense block the last
``dilation`` inputs (the state its ``step`` needs is ``W_0 x[t - d] + b``), per attention block the
keys and values of the steps so far (its ``step`` reads them and the new step). The cost of a step
is that of one position, plus attention over the ``t`` cached keys.

Default layout (the paper's bandit/MDP agent, our reading of its appendix): a linear embedding of
``embed_size`` channels, ``TC(T, 32)``, ``TC(T, 32)``, ``Attention(32, 32)``, then the policy and
value heads (``layout`` changes it: ``["tc:32", "attn:16:16", ...]``). ``T = n_episodes * horizon``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.learners.snail_blocks import AttentionBlock, DenseBlock, TCBlock
from rnnmeta.rl.agent import SequenceAgent
from rnnmeta.rl.base import TaskFamily


def _parse_layout(layout: list[str]) -> list[tuple[str, list[int]]]:
    parsed = []
    for item in layout:
        kind, *sizes = str(item).split(":")
        try:
            numbers = [int(s) for s in sizes]
        except ValueError:
            numbers = []
        if (kind == "tc" and len(numbers) == 1 or kind == "attn" and len(numbers) == 2) and all(n >= 1 for n in numbers):
            parsed.append((kind, numbers))
        else:
            raise ValueError(f"SNAILAgent layout entries are 'tc:<filters>' or 'attn:<key_size>:<value_size>', got {item!r}")
    if not parsed:
        raise ValueError("SNAILAgent layout must name at least one block")
    return parsed


class SNAILAgent(SequenceAgent):
    """SNAIL over the trial, acting incrementally. See :class:`~rnnmeta.rl.agent.SequenceAgent` for training arguments.

    Args:
        layout: blocks in order: ``"tc:<filters>"`` or ``"attn:<key_size>:<value_size>"``.
        embed_size: channels of the linear input embedding (0: none, the blocks read ``D`` channels).
        tc_first_dilation: 1 (dilations 1, 2, 4, ...) or 2 (the paper's 2, 4, 8, ...); see :class:`TCBlock`.

    Shapes: acting ``x [B, D] -> features [B, F]``; training ``[B, T, D] -> [B, T, F]`` (``F``: the last block's channels).
    """

    def __init__(
        self,
        family: TaskFamily,
        n_episodes: int,
        layout: Optional[list[str]] = None,
        embed_size: int = 32,
        tc_first_dilation: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(family, n_episodes, **kwargs)
        layout = ["tc:32", "tc:32", "attn:32:32"] if layout is None else list(layout)
        if isinstance(embed_size, bool) or not isinstance(embed_size, int) or embed_size < 0:
            raise ValueError(f"SNAILAgent: embed_size must be an integer >= 0, got embed_size={embed_size!r}")
        self.embed = nn.Linear(self.input_size, embed_size) if embed_size else nn.Identity()
        channels = embed_size or self.input_size
        blocks: list[nn.Module] = []
        for kind, sizes in _parse_layout(layout):
            block = TCBlock(channels, self.trial_len, sizes[0], tc_first_dilation) if kind == "tc" else AttentionBlock(channels, *sizes)
            blocks.append(block)
            channels = block.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.build_heads(channels)

    def _dense_blocks(self, block: nn.Module) -> list[DenseBlock]:
        return list(block.blocks) if isinstance(block, TCBlock) else [block]

    def initial_state(self, batch: int) -> list[Any]:
        """Per block: the last ``dilation`` inputs of each dense block, or an attention block's keys and values (empty)."""
        dev, state = self.device, []
        for block in self.blocks:
            if isinstance(block, AttentionBlock):
                state.append((torch.zeros(batch, 0, block.key_size, device=dev), torch.zeros(batch, 0, block.value_size, device=dev)))
            else:
                state.append([torch.zeros(batch, d.dilation, d.in_channels, device=dev) for d in self._dense_blocks(block)])
        return state

    def step(self, x: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        h = self.embed(x).unsqueeze(1)  # [B, 1, C]
        new_state = []
        for block, s in zip(self.blocks, state):
            if isinstance(block, AttentionBlock):
                keys, values = s
                out = block.step(h, (keys, values))
                new_state.append((torch.cat([keys, block.key(h)], 1), torch.cat([values, block.value(h)], 1)))
                h = out
            else:
                buffers = []
                for dense, past in zip(self._dense_blocks(block), s):
                    # DenseBlock.step's state: W_0 x[t - dilation] + b (zeros before the trial's start)
                    out = dense.step(h, F.linear(past[:, 0], dense.conv.weight[:, :, 0], dense.conv.bias))
                    buffers.append(torch.cat([past[:, 1:], h], 1))
                    h = out
                new_state.append(buffers)
        return h[:, 0], new_state

    def features(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return h


__all__ = ["SNAILAgent"]
