"""A label memory for the recurrent learners: the support set as (embedding, label) pairs read by cosine.

A key-value memory in the sense of Kaiser et al. (2017, "Learning to remember rare events"): each
support example writes one row, its embedding as the key and its one-hot label as the value; a query
reads the rows with content-based addressing, as a read head of MANN does (Santoro et al. 2016,
eq. 3), with the key fixed to the query's own embedding::

    w_s(q) = softmax_s(sharpness * cos(e_q, e_s))        vote(q) = sum_s w_s(q) one_hot(y_s)   [n_way]

With ``rows="classes"`` the memory has one row per label instead, to which each support example of that
label adds its embedding (a write addressed by the label, as MANN's least-used write is addressed by
usage), so a query's cosine is taken with the sum of each class's embeddings, the direction of its
prototype (Snell et al. 2017), and the read weights are the vote::

    vote_c(q) = softmax_c(sharpness * cos(e_q, sum_{s: y_s = c} e_s))

The similarity has no parameters (a *fixed similarity*): the embedding alone learns the metric, as in
a matching network (Vinyals et al. 2016). :class:`~rnnmeta.learners.LSTMLearner` and
:class:`~rnnmeta.learners.MANN` take the vote as ``n_way`` more inputs of their prediction head
(``label_memory``), and :func:`vote_readout_` starts that head as ``gain`` times the vote
(``vote_readout``), the counterpart of SNAIL's vote readout (:func:`~rnnmeta.learners.snail.vote_readout_`).
:class:`~rnnmeta.learners.SNAIL` adds a linear vote head's reading of the vote to its network's answer,
which is the same head over ``[features, vote]``.
Why: on CLINC150 the learned comparisons of the memory learners overfit the 75 training intents,
while a fixed similarity of learned embeddings does not (docs/TEXT.md).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION

__all__ = ["LabelMemory", "MemoryRows", "ReadsLabelMemory", "check_label_memory", "vote_readout_"]

#: what a row of the label memory holds: one support example, or the sum of one class's examples
MemoryRows = Literal["examples", "classes"]


def check_label_memory(sharpness: float, gain: float, kind: str, rows: str = "examples") -> None:
    """Refuse a label memory outside classification, a negative sharpness, a vote readout without a memory, unknown rows."""
    if rows not in ("examples", "classes"):
        raise ValueError(f"label_memory_rows must be 'examples' or 'classes', got {rows!r}")
    for name, value in (("label_memory", sharpness), ("vote_readout", gain)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {name}={value!r}")
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0 (0 turns it off), got {name}={value}")
    if sharpness and kind != CLASSIFICATION:
        raise ValueError(f"label_memory={sharpness} stores one-hot labels: it needs kind='classification', got {kind!r}")
    if gain and not sharpness:
        raise ValueError(f"vote_readout={gain} reads the label memory's vote: it needs label_memory > 0, got label_memory=0")


class LabelMemory(nn.Module):
    """The support set as a key-value memory of (embedding, one-hot label) rows; no parameters.

    Args:
        n_way: classes (the width of a value).
        sharpness: ``beta`` multiplying the cosine similarities before the softmax over the rows.
        rows: ``"examples"`` (one row per support example) or ``"classes"`` (one row per label: the sum
            of its examples' embeddings).
    """

    def __init__(self, n_way: int, sharpness: float, rows: MemoryRows = "examples") -> None:
        super().__init__()
        self.n_way, self.sharpness, self.rows = n_way, float(sharpness), rows

    def forward(self, query_e: Tensor, support_e: Tensor, support_y: Tensor) -> Tensor:
        """The vote over the support labels of each query.

        Args:
            query_e: ``[B, M, E]`` query embeddings (the keys the queries read with).
            support_e: ``[B, S, E]`` support embeddings (the rows' keys).
            support_y: ``[B, S]`` int64 labels (the rows' values).

        Returns:
            ``[B, M, n_way]``: non-negative, each row sums to 1.
        """
        labels = F.one_hot(support_y, self.n_way).to(support_e.dtype)  # [B, S, N]
        if self.rows == "classes":
            present = labels.sum(1, keepdim=True) > 0  # [B, 1, N]: a label with no support example has no row
            return self.weights(query_e, labels.transpose(1, 2) @ support_e, present)  # rows: the class sums [B, N, E]
        return torch.bmm(self.weights(query_e, support_e), labels)

    def weights(self, query_e: Tensor, support_e: Tensor, allowed: Tensor | None = None) -> Tensor:
        """``softmax_s(sharpness * cos(e_q, e_s))`` ``[B, M, S]``; ``allowed`` (bool, broadcast to ``[B, M, S]``) masks rows out (all masked: 0)."""
        scores = self.sharpness * torch.bmm(F.normalize(query_e, dim=-1), F.normalize(support_e, dim=-1).transpose(1, 2))
        if allowed is None:
            return torch.softmax(scores, dim=-1)
        scores = scores.masked_fill(~allowed, float("-inf"))
        return torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a query with no row before it reads nothing

    def stream(self, e: Tensor, labels: Tensor) -> Tensor:
        """The vote of each step of a stream over the steps before it (the online protocol).

        Args:
            e: ``[B, T, E]`` embeddings of the stream.
            labels: ``[B, T, n_way]`` one-hot label of each step (rows of zeros where it is not known).

        Returns:
            ``[B, T, n_way]``: step ``t`` reads the rows ``s < t`` only; step 0 reads nothing (zeros).
        """
        steps = e.shape[1]
        labels = labels.to(e.dtype)
        if self.rows == "classes":  # step t's rows: the class sums of the steps before it, [B, T, N, E]
            sums = torch.cumsum(labels.unsqueeze(-1) * e.unsqueeze(-2), dim=1) - labels.unsqueeze(-1) * e.unsqueeze(-2)
            seen = (torch.cumsum(labels, dim=1) - labels) > 0  # [B, T, N]: the class had a step before t
            scores = self.sharpness * (F.normalize(e, dim=-1).unsqueeze(-2) * F.normalize(sums, dim=-1)).sum(-1)
            return torch.softmax(scores.masked_fill(~seen, float("-inf")), dim=-1).nan_to_num(0.0)
        before = torch.ones(steps, steps, dtype=torch.bool, device=e.device).tril(-1)
        return torch.bmm(self.weights(e, e, before), labels)


class ReadsLabelMemory:
    """Mixin of a learner with an optional label memory (``self.label_memory``: a :class:`LabelMemory` or ``None``)."""

    label_memory: Optional[LabelMemory]

    def vote(self, query_e: Tensor, support_e: Optional[Tensor], support_y: Optional[Tensor]) -> Optional[Tensor]:
        """The label memory's vote ``[B, M, n_way]`` over the support embeddings ``[B, S, E]`` and labels ``[B, S]``
        for the query embeddings ``[B, M, E]`` (``None`` without ``label_memory``)."""
        if self.label_memory is None:
            return None
        return self.label_memory(query_e, support_e, support_y)


def vote_readout_(head: nn.Linear, vote_start: int, n_way: int, gain: float) -> None:
    """Start ``head`` as ``gain`` times the label memory's vote, read at inputs ``vote_start .. vote_start + n_way`` (in place).

    Every other weight and the bias start at 0, so at initialisation ``logits[c] = gain * vote[c]``,
    a matching network's attention-weighted vote; the learner's own features join as training moves
    their weights (as SNAIL's ``vote_readout``).
    """
    if head.out_features != n_way or head.in_features < vote_start + n_way:
        raise ValueError(f"vote_readout needs a head with {n_way} outputs reading the vote at inputs {vote_start}.."
                         f"{vote_start + n_way - 1}, got a head {head.in_features} -> {head.out_features}")
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
        head.weight[:, vote_start : vote_start + n_way].copy_(gain * torch.eye(n_way))
