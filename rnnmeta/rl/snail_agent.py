"""SNAIL as a meta-RL agent (Mishra et al. 2018, "A Simple Neural Attentive Meta-Learner", Section 4.3 and
Appendix): temporal-convolution and causal attention blocks over the steps of the trial.

The blocks are :mod:`rnnmeta.learners.snail_blocks`' :class:`DenseBlock`, :class:`TCBlock` and
:class:`AttentionBlock`. Training reads whole trials ``[B, T, D]`` with their ``forward``; acting
steps incrementally from a cache (:class:`SNAILActingCache`), never re-reading the trial: per dense block a
ring of the last ``dilation`` input projections ``W_0 x[t - d] + b`` (the state its ``step`` needs), per
attention block buffers for the trial's keys and values. The cost of a step is that of one position,
plus attention over the ``t + 1`` cached keys; nothing in the cache is copied as the trial grows.

Default layout (the paper's bandit/MDP agent, our reading of its appendix): a linear embedding of
``embed_size`` channels, ``TC(T, 32)``, ``TC(T, 32)``, ``Attention(32, 32)``, then the policy and
value heads (``layout`` changes it: ``["tc:32", "attn:16:16", ...]``). ``T = n_episodes * horizon``.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class SNAILActingCache:
    """:class:`SNAILAgent`'s state while acting.

    ``t``: steps of the trial so far. ``rings``: per block of the agent, a TC block's list of rings
    ``[B, dilation, 2 * filters]``, one per dense block (slot ``s % dilation`` holds ``W_0 x[s] + b``), or an
    attention block's ``(keys [B, trial_len, key_size], values [B, trial_len, value_size])``, filled up to ``t``.
    """

    t: int
    rings: list[Any]


def _write(buffer: Tensor, index: int, value: Tensor, in_place: bool) -> Tensor:
    """``buffer[:, index] = value[:, 0]``: in place, or (under autograd) into a new tensor that keeps the graph."""
    if in_place:
        buffer[:, index] = value[:, 0]
        return buffer
    return buffer.index_copy(1, torch.tensor([index], device=buffer.device), value)


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

    def initial_state(self, batch: int) -> SNAILActingCache:
        """An empty trial: each dense block's ring holds ``b`` (the projection ``W_0 x + b`` of the zeros before the
        trial's start), each attention block's key and value buffers have room for ``trial_len`` steps."""
        dtype, rings = next(self.parameters()).dtype, []
        for block in self.blocks:
            if isinstance(block, AttentionBlock):
                rings.append((torch.zeros(batch, self.trial_len, block.key_size, device=self.device, dtype=dtype),
                              torch.zeros(batch, self.trial_len, block.value_size, device=self.device, dtype=dtype)))
            else:
                rings.append([d.conv.bias.expand(batch, d.dilation, -1).clone() for d in self._dense_blocks(block)])
        return SNAILActingCache(0, rings)

    def step(self, x: Tensor, state: SNAILActingCache) -> tuple[Tensor, SNAILActingCache]:
        """Step ``t = state.t`` of the trial: ``x [B, D] -> features [B, F]``. Without autograd (acting) the cache is
        updated in place and returned; with it, a new cache is returned and ``state`` is left as it was."""
        t = state.t
        if t >= self.trial_len:
            raise ValueError(f"SNAILAgent was built for trials of {self.trial_len} steps; this is step {t + 1}")
        in_place = not torch.is_grad_enabled()
        h = self.embed(x).unsqueeze(1)  # [B, 1, C]
        new_rings: list[Any] = []
        for block, ring in zip(self.blocks, state.rings):
            if isinstance(block, AttentionBlock):
                keys = _write(ring[0], t, block.key(h), in_place)
                values = _write(ring[1], t, block.value(h), in_place)
                h = block.read(h, keys[:, : t + 1], values[:, : t + 1])
                new_rings.append((keys, values))
            else:
                dense_rings = []
                for dense, past in zip(self._dense_blocks(block), ring):
                    slot = t % dense.dilation  # holds W_0 x[t - dilation] + b; then this step's projection
                    out = dense.step(h, past[:, slot])
                    projection = F.linear(h, dense.conv.weight[:, :, 0], dense.conv.bias)  # [B, 1, 2F]
                    dense_rings.append(_write(past, slot, projection, in_place))
                    h = out
                new_rings.append(dense_rings)
        if in_place:
            state.t = t + 1
            return h[:, 0], state
        return h[:, 0], SNAILActingCache(t + 1, new_rings)

    def features(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return h


__all__ = ["SNAILActingCache", "SNAILAgent"]
