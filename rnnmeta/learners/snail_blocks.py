"""The building blocks of SNAIL (Mishra et al., "A Simple Neural Attentive Meta-Learner", ICLR 2018).

Every block maps a sequence ``[B, T, C]`` to ``[B, T, C + out]``: it computes ``out`` new
channels from the past and present of the sequence and concatenates them to its input, so a
stack of blocks keeps every earlier layer's features (DenseNet-style). All blocks are causal:
the output at step ``t`` depends on inputs at steps ``<= t`` only.

Besides the whole-sequence :meth:`forward`, each block supports incremental decoding used to
answer many queries from one encoded prefix:

* :meth:`encode` runs the block over a prefix ``[B, S, C]`` and returns its output together
  with a *state*: what a step right after the prefix needs to know about it (for a dense block
  the convolution's contribution of input ``S - dilation``; for an attention block the keys and
  values of all prefix positions).
* :meth:`step` answers ``M`` candidate "next steps" ``[B, M, C]`` at position ``S``, each as
  if it alone followed the prefix (no candidate sees another): ``[B, M, C + out]``.

``step(x, encode(prefix)[1])[:, m]`` equals ``forward(cat([prefix, x[:, m:m+1]], 1))[:, S]``.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The state a block hands from an encoded prefix to its next steps.
DenseState = Tensor  # [B, 2 * filters]
AttentionState = tuple[Tensor, Tensor]  # keys [B, S, key_size], values [B, S, value_size]
TCState = list[DenseState]
BlockState = Union[DenseState, AttentionState, TCState]


def _check_sequence(x: Tensor, channels: int, name: str) -> None:
    if x.dim() != 3 or x.shape[-1] != channels:
        raise ValueError(f"{name} expects a sequence [B, T, {channels}], got shape {list(x.shape)}")


class _Stack(nn.Module):
    """Blocks run in order (``self.blocks``); :meth:`encode` and :meth:`step` chain their states."""

    def encode(self, x: Tensor) -> tuple[Tensor, list[BlockState]]:
        states = []
        for block in self.blocks:
            x, state = block.encode(x)
            states.append(state)
        return x, states

    def step(self, x: Tensor, states: list[BlockState]) -> Tensor:
        for block, state in zip(self.blocks, states):
            x = block.step(x, state)
        return x


class DenseBlock(nn.Module):
    """Causal gated convolution whose output is concatenated to its input (SNAIL, Algorithm 1).

    ``xf, xg = CausalConv(x, dilation, filters)`` (kernel size 2, zero padding on the left only),
    ``activations = tanh(xf) * sigmoid(xg)``, output ``concat(x, activations)``. The filter and
    gate convolutions are one convolution with ``2 * filters`` output channels.

    Args:
        in_channels: channels ``C`` of the input sequence.
        filters: new channels produced.
        dilation: dilation of the kernel: step ``t`` reads inputs ``t - dilation`` and ``t``.

    Shapes:
        ``[B, T, C] -> [B, T, C + filters]``.
    """

    def __init__(self, in_channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        if in_channels < 1 or filters < 1 or dilation < 1:
            raise ValueError(
                f"DenseBlock needs in_channels, filters and dilation >= 1, got {in_channels}, {filters}, {dilation}"
            )
        self.in_channels, self.filters, self.dilation = in_channels, filters, dilation
        self.out_channels = in_channels + filters
        self.conv = nn.Conv1d(in_channels, 2 * filters, kernel_size=2, dilation=dilation)

    def _gate(self, z: Tensor) -> Tensor:
        xf, xg = z.split(self.filters, dim=-1)
        return torch.tanh(xf) * torch.sigmoid(xg)

    def forward(self, x: Tensor) -> Tensor:
        _check_sequence(x, self.in_channels, "DenseBlock")
        if x.shape[1] == 0:  # an empty prefix: nothing to convolve
            return x.new_zeros(x.shape[0], 0, self.out_channels)
        # step t sees x[t - d] (zeros before the start) and x[t]: the kernel-2 convolution as one
        # matrix product over [x[t - d], x[t]], the same on every backend and fast without oneDNN
        # (the dilated convolution's fallback loops over samples: rnnmeta.numerics)
        past = F.pad(x, (0, 0, self.dilation, 0))[:, : x.shape[1]]
        weight = self.conv.weight.transpose(1, 2).reshape(self.conv.out_channels, 2 * self.in_channels)
        z = F.linear(torch.cat([past, x], dim=-1), weight, self.conv.bias)
        return torch.cat([x, self._gate(z)], dim=-1)

    def encode(self, x: Tensor) -> tuple[Tensor, DenseState]:
        """Run over a prefix ``[B, S, C]``; the state is ``W_0 x[S - d] + b`` ``[B, 2 * filters]``."""
        out = self.forward(x)
        s = x.shape[1]
        past = x[:, s - self.dilation] if s >= self.dilation else x.new_zeros(x.shape[0], self.in_channels)
        return out, F.linear(past, self.conv.weight[:, :, 0], self.conv.bias)

    def step(self, x: Tensor, state: DenseState) -> Tensor:
        """Next steps ``[B, M, C] -> [B, M, C + filters]`` after the prefix whose state is given."""
        _check_sequence(x, self.in_channels, "DenseBlock.step")
        z = state.unsqueeze(1) + F.linear(x, self.conv.weight[:, :, 1])
        return torch.cat([x, self._gate(z)], dim=-1)


class TCBlock(_Stack):
    """Temporal-convolution block: ``n = ceil(log2 seq_len)`` dense blocks with doubling dilations.

    SNAIL's Algorithm 2 (Mishra et al. 2018) uses dilations ``2, 4, ..., 2^n`` (``first_dilation=2``),
    through which a step reaches only *even* offsets; this library's default (``first_dilation=1``)
    starts one octave lower, ``1, 2, ..., 2^(n-1)``, and reaches every offset ``0..2^n - 1``
    (docs/SNAIL.md).

    Args:
        in_channels: channels ``C`` of the input sequence.
        seq_len: the longest sequence ``T`` the block must cover (sets ``n``).
        filters: channels added by each dense block.
        first_dilation: dilation of the first dense block (1 or 2); block ``i`` has
            ``first_dilation * 2^i``.

    Shapes:
        ``[B, T, C] -> [B, T, C + n * filters]``.
    """

    def __init__(self, in_channels: int, seq_len: int, filters: int, first_dilation: int = 1) -> None:
        super().__init__()
        if seq_len < 1:
            raise ValueError(f"TCBlock needs seq_len >= 1, got {seq_len}")
        if first_dilation not in (1, 2):
            raise ValueError(
                f"TCBlock first_dilation must be 1 (dilations 1, 2, 4, ...) or 2 (SNAIL's Algorithm 2: 2, 4, 8, ...), "
                f"got {first_dilation!r}"
            )
        self.in_channels, self.seq_len, self.filters = in_channels, seq_len, filters
        self.first_dilation = first_dilation
        n_blocks = max(1, math.ceil(math.log2(seq_len)))
        blocks, channels = [], in_channels
        for i in range(n_blocks):
            blocks.append(DenseBlock(channels, filters, dilation=first_dilation * 2**i))
            channels += filters
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        _check_sequence(x, self.in_channels, "TCBlock")
        for block in self.blocks:
            x = block(x)
        return x


class AttentionBlock(nn.Module):
    """Causal single-head soft attention whose read is concatenated to its input (SNAIL, Algorithm 3).

    ``keys, query = affine(x, key_size)``, ``values = affine(x, value_size)``,
    ``read = softmax(mask(query keys^T / sqrt(key_size))) values`` where the softmax runs over
    the keys and the mask lets step ``t`` attend to steps ``<= t`` only; output ``concat(x, read)``.

    Args:
        in_channels: channels ``C`` of the input sequence.
        key_size: size of queries and keys.
        value_size: size of values, i.e. channels added.

    Shapes:
        ``[B, T, C] -> [B, T, C + value_size]``; with ``return_weights=True`` also the attention
        weights ``[B, T, T]`` (row ``t``: the distribution over keys ``0..T-1`` read by step ``t``).
    """

    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        if in_channels < 1 or key_size < 1 or value_size < 1:
            raise ValueError(
                f"AttentionBlock needs in_channels, key_size and value_size >= 1, got {in_channels}, {key_size}, {value_size}"
            )
        self.in_channels, self.key_size, self.value_size = in_channels, key_size, value_size
        self.out_channels = in_channels + value_size
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)
        self.scale = 1.0 / math.sqrt(key_size)

    def forward(self, x: Tensor, return_weights: bool = False) -> Union[Tensor, tuple[Tensor, Tensor]]:
        _check_sequence(x, self.in_channels, "AttentionBlock")
        out, weights = self._attend(x, self.key(x), self.value(x), return_weights)
        return (out, weights) if return_weights else out

    def _attend(self, x: Tensor, k: Tensor, v: Tensor, return_weights: bool) -> tuple[Tensor, Optional[Tensor]]:
        t = x.shape[1]
        q = self.query(x)
        # allowed[i, j]: step i may read step j, i.e. j <= i. Built where the input lives.
        allowed = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        if return_weights:
            scores = (q @ k.transpose(1, 2)) * self.scale
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)  # over the keys
            return torch.cat([x, weights @ v], dim=-1), weights
        read = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale)
        return torch.cat([x, read], dim=-1), None

    def encode(self, x: Tensor) -> tuple[Tensor, AttentionState]:
        """Run over a prefix ``[B, S, C]``; the state is its keys and values."""
        _check_sequence(x, self.in_channels, "AttentionBlock")
        k, v = self.key(x), self.value(x)
        return self._attend(x, k, v, False)[0], (k, v)

    def step(self, x: Tensor, state: AttentionState) -> Tensor:
        """Next steps ``[B, M, C]``: each reads the ``S`` prefix positions and itself, not the others."""
        _check_sequence(x, self.in_channels, "AttentionBlock.step")
        past_k, past_v = state
        s, m = past_k.shape[1], x.shape[1]
        keys = torch.cat([past_k, self.key(x)], dim=1)  # [B, S + M, key_size]
        values = torch.cat([past_v, self.value(x)], dim=1)
        # [M, S + M]: every prefix key, and the candidate's own key
        allowed = torch.cat([x.new_ones(m, s, dtype=torch.bool), torch.eye(m, dtype=torch.bool, device=x.device)], 1)
        return self.read(x, keys, values, allowed)

    def read(self, x: Tensor, keys: Tensor, values: Tensor, allowed: Optional[Tensor] = None) -> Tensor:
        """Steps ``x [B, M, C]`` that read ``keys [B, S, key_size]`` and ``values [B, S, value_size]`` already
        computed (an incremental cache), all of them or where ``allowed [M, S]`` -> ``[B, M, C + value_size]``."""
        _check_sequence(x, self.in_channels, "AttentionBlock.read")
        read = F.scaled_dot_product_attention(self.query(x), keys, values, attn_mask=allowed, scale=self.scale)
        return torch.cat([x, read], dim=-1)


class SNAILNetwork(_Stack):
    """The SNAIL stack: ``Attention, (TC, Attention) * n`` and a 1x1 convolution to ``out_features``.

    The Omniglot layout: ``key_sizes=[64, 256, 512]``, ``value_sizes=[32, 128, 256]``, ``tc_filters=[128, 128]``.

    Args:
        in_channels: channels of each input step (embedding + label channels).
        seq_len: the longest sequence ``T`` (sets the depth of the TC blocks).
        out_features: width of the per-step output.
        key_sizes, value_sizes: one entry per attention block.
        tc_filters: filters of the TC block between consecutive attention blocks
            (``len(key_sizes) - 1`` entries).
        tc_first_dilation: first dilation of every TC block: 1 (``1, 2, 4, ...``, default) or 2
            (``2, 4, 8, ...``, the paper's Algorithm 2); see :class:`TCBlock`.

    Shapes:
        :meth:`forward` ``[B, T, in_channels] -> [B, T, out_features]``;
        :meth:`encode` ``[B, S, in_channels] -> states``; :meth:`step` ``[B, M, in_channels] -> [B, M, out_features]``.
    """

    def __init__(
        self,
        in_channels: int,
        seq_len: int,
        out_features: int,
        key_sizes: list[int],
        value_sizes: list[int],
        tc_filters: list[int],
        tc_first_dilation: int = 1,
    ) -> None:
        super().__init__()
        if len(key_sizes) < 1 or len(value_sizes) != len(key_sizes) or len(tc_filters) != len(key_sizes) - 1:
            raise ValueError(
                "SNAIL needs key_sizes and value_sizes of equal length n >= 1 and n - 1 tc_filters, got "
                f"key_sizes={key_sizes}, value_sizes={value_sizes}, tc_filters={tc_filters}"
            )
        self.in_channels, self.seq_len = in_channels, seq_len
        blocks: list[nn.Module] = []
        channels = in_channels
        for i, (k, v) in enumerate(zip(key_sizes, value_sizes)):
            if i > 0:
                tc = TCBlock(channels, seq_len, tc_filters[i - 1], first_dilation=tc_first_dilation)
                blocks.append(tc)
                channels = tc.out_channels
            att = AttentionBlock(channels, k, v)
            blocks.append(att)
            channels = att.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.features = channels
        self.output = nn.Linear(channels, out_features)  # the 1x1 convolution

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.output(x)

    def encode(self, x: Tensor) -> list[BlockState]:
        """Encode a prefix ``[B, S, in_channels]`` once: the per-block states its next steps need."""
        return super().encode(x)[1]

    def step(self, x: Tensor, states: list[BlockState]) -> Tensor:
        """Outputs ``[B, M, out_features]`` of ``M`` independent next steps ``[B, M, in_channels]``."""
        return self.output(super().step(x, states))


def map_state(states: list[BlockState], fn: Callable[[Tensor], Tensor]) -> list[BlockState]:
    """Apply ``fn`` to every tensor of a nested state (e.g. ``detach``)."""
    if isinstance(states, Tensor):
        return fn(states)
    if isinstance(states, tuple):
        return tuple(map_state(s, fn) for s in states)
    return [map_state(s, fn) for s in states]


__all__ = ["DenseBlock", "TCBlock", "AttentionBlock", "SNAILNetwork", "map_state"]
