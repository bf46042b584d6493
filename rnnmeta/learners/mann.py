"""The memory-augmented neural network (MANN) of Santoro et al. (2016).

An LSTM controller reads the support set one labelled example per step (as in
:class:`~rnnmeta.learners.lstm.LSTMLearner`) and talks to an external memory ``M [N, W]``
(``memory_slots x memory_width``) through ``R`` read heads.

At each support step ``t`` with controller output ``h_t``, each head ``r`` emits a read key
``k_t``, a write (add) vector ``a_t``, a write-gate logit ``alpha_t`` and (unless fixed) a read
sharpness ``beta_t``. With ``addressing="santoro"`` (default) ``k_t = tanh(W_k h_t + b_k)`` and
``a_t = tanh(W_a h_t + b_a)``; ``addressing="shared_key"`` (this library's earlier variant) writes
and reads one linear key ``k_t = a_t = W_k h_t + b_k``. ``tie_add_init=True`` starts ``W_a, b_a``
equal to ``W_k, b_k`` (measured in ``docs/RECURRENT.md``).

* **least-recently-used write**: ``w^w_t = sigmoid(alpha_t) w^r_{t-1} + (1 - sigmoid(alpha_t)) w^lu_{t-1}``,
  where ``w^lu_{t-1}`` of head ``r`` is one-hot on the ``r``-th least-used slot (by ``w^u_{t-1}``); the
  least-used row is zeroed first, then ``M_t = M_{t-1} + sum_r w^w_t(r)^T a_t(r)``;
* **content-based read**: ``w^r_t(i) = softmax_i(beta_t cos(k_t, M_t(i)))`` and ``r_t = w^r_t M_t``;
  the read is a convex combination of memory rows (``read_sharpness=1.0`` is the paper's eq. 3,
  a softmax of raw cosines; the default learns ``beta_t``, starting near 10);
* **usage**: ``w^u_t = gamma w^u_{t-1} + sum_r (w^r_t + w^w_t)``.

The controller's input at step ``t`` is ``[embed(x_t), label(y_t), r_{t-1}]``, its prediction
``Linear([h_t, r_t])``. Queries only read, in one batched pass from the state after the support
set, so each is answered independently. The memory starts from a small constant in every episode.
``metric_loss_weight`` adds ProtoNet's loss on the embeddings in training (as LSTMLearner's).
``label_memory`` adds a parameter-free memory of (embedding, label) rows whose cosine-addressed vote
the head reads too (:mod:`rnnmeta.learners.label_memory`; ``vote_readout`` starts the head as it).
:meth:`MANN.predict_stream` runs the paper's online protocol (:mod:`rnnmeta.learners.online`).

Reference:
    A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap. "Meta-learning with
    memory-augmented neural networks". ICML 2016 (controller 200 LSTM units, memory 128 x 40,
    4 read heads; eqs. 2-8 for cosine addressing, reads, usage and the LRU write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION
from rnnmeta.learners.base import MetaLearner
from rnnmeta.learners.auxiliary import MetricAuxiliaryLoss
from rnnmeta.learners.label_memory import LabelMemory, MemoryRows, ReadsLabelMemory, check_label_memory, vote_readout_
from rnnmeta.learners.sequence import check_metric_loss_weight, check_positive, check_query, check_read_init, embed
from rnnmeta.learners.sequence import check_matching_init, encode_labels, given, key_value_init_
from rnnmeta.learners.sequence import label_readout_init_, label_width, matching_init_
from rnnmeta.nets import backbone_features, resolve_backbone
from rnnmeta.learners.online import check_stream_inputs, encode_previous_labels, labels_of_steps

#: bias of the learned sharpness logit: beta starts at 1 + softplus(9) ~ 10
_INIT_SHARPNESS_LOGIT = 9.0

__all__ = ["MANN", "MANNPredictor", "LRUAMemory", "MemoryState"]


@dataclass
class MemoryState:
    """The memory of ``B`` tasks between two steps.

    Attributes:
        memory: ``[B, N, W]`` memory rows.
        usage: ``[B, N]`` usage weights ``w^u``.
        read_weights: ``[B, R, N]`` read weights ``w^r`` of the last step (convex, one row per head).
        reads: ``[B, R, W]`` what the heads read at the last step.
    """

    memory: Tensor
    usage: Tensor
    read_weights: Tensor
    reads: Tensor


class LRUAMemory(nn.Module):
    """Content-addressed memory with least-recently-used-access writes (Santoro et al. 2016).

    Args:
        controller_size: width of the controller output ``h`` the heads are computed from.
        memory_slots: rows ``N`` of the memory.
        memory_width: width ``W`` of a row (and of a key).
        read_heads: heads ``R``; each reads and writes with its own key.
        gamma: usage decay in ``[0, 1)``.
        addressing: ``"santoro"`` or ``"shared_key"`` (see the module docstring).
        tie_add_init: ``"santoro"`` only: initialise the add-vector weights equal to the key weights.
        read_sharpness: fixed ``beta`` multiplying the cosine similarities before the softmax;
            ``None`` learns it: each head emits ``beta = 1 + softplus(.)`` from ``h``.
        init_value: constant every memory cell starts from (a small value keeps cosines defined).
    """

    def __init__(
        self,
        controller_size: int,
        memory_slots: int = 128,
        memory_width: int = 40,
        read_heads: int = 4,
        gamma: float = 0.95,
        read_sharpness: Optional[float] = None,
        init_value: float = 1e-6,
        addressing: Literal["santoro", "shared_key"] = "santoro",
        tie_add_init: bool = True,
    ) -> None:
        super().__init__()
        check_positive(controller_size=controller_size, memory_slots=memory_slots, memory_width=memory_width,
                       read_heads=read_heads)
        if read_heads > memory_slots:
            raise ValueError(f"read_heads ({read_heads}) must not exceed memory_slots ({memory_slots})")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma (usage decay) must lie in [0, 1), got {gamma}")
        if read_sharpness is not None and not read_sharpness > 0:
            raise ValueError(f"read_sharpness must be > 0 or None (learned), got {read_sharpness}")
        if addressing not in ("santoro", "shared_key"):
            raise ValueError(f"addressing must be 'santoro' or 'shared_key', got {addressing!r}")
        self.slots, self.width, self.heads = memory_slots, memory_width, read_heads
        self.gamma, self.read_sharpness, self.init_value = gamma, read_sharpness, init_value
        self.addressing = addressing
        # per head: key (W), add vector (W, santoro only), write-gate logit (1), sharpness logit (1, when learned)
        self.vectors = 2 if addressing == "santoro" else 1
        self.per_head = self.vectors * memory_width + 1 + (1 if read_sharpness is None else 0)
        self.interface = nn.Linear(controller_size, read_heads * self.per_head)
        if read_sharpness is None:
            # start sharp (beta ~ 10): with a mostly empty memory, a softmax of raw cosines in [-1, 1]
            # over N rows is nearly uniform and the reads carry almost no signal to learn from
            with torch.no_grad():
                self.interface.bias.view(read_heads, self.per_head)[:, -1].fill_(_INIT_SHARPNESS_LOGIT)
        if addressing == "santoro" and tie_add_init:
            # start with a_t = k_t: what a support step writes is what a similar query's key finds,
            # so reads match queries with support examples from the first step (separate weights after it)
            with torch.no_grad():
                for rows in (self.interface.weight.view(read_heads, self.per_head, -1), self.interface.bias.view(read_heads, self.per_head)):
                    rows[:, memory_width : 2 * memory_width].copy_(rows[:, :memory_width])

    # ------------------------------------------------------------------ pieces
    def initial_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> MemoryState:
        """Fresh memory for ``batch`` tasks: constant rows, zero usage, head ``r`` last read slot ``r``."""
        memory = torch.full((batch, self.slots, self.width), self.init_value, device=device, dtype=dtype)
        usage = torch.zeros(batch, self.slots, device=device, dtype=dtype)
        eye = torch.eye(self.heads, self.slots, device=device, dtype=dtype)
        read_weights = eye.unsqueeze(0).expand(batch, -1, -1)
        reads = torch.zeros(batch, self.heads, self.width, device=device, dtype=dtype)
        return MemoryState(memory, usage, read_weights, reads)

    def heads_from(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Split the interface of ``h [..., H]``.

        Returns:
            read keys ``[..., R, W]``, add vectors ``[..., R, W]`` (the keys themselves with
            ``addressing="shared_key"``), write-gate logits ``[..., R, 1]`` and sharpness ``[..., R, 1]``.
        """
        out = self.interface(h).reshape(*h.shape[:-1], self.heads, self.per_head)
        width, vec = self.width, self.vectors * self.width
        if self.addressing == "santoro":
            key, add = torch.tanh(out[..., :width]), torch.tanh(out[..., width:vec])
        else:
            key = add = out[..., :width]
        gate = out[..., vec : vec + 1]
        if self.read_sharpness is None:
            beta = 1.0 + F.softplus(out[..., vec + 1 :])
        else:
            beta = torch.full_like(gate, self.read_sharpness)
        return key, add, gate, beta

    @staticmethod
    def address(keys: Tensor, beta: Tensor, memory: Tensor, eps: float = 1e-8) -> Tensor:
        """Content-based weights ``softmax_i(beta * cos(key, M_i))``.

        Args:
            keys: ``[B, K, W]`` (any number ``K`` of keys per task).
            beta: ``[B, K, 1]`` sharpness.
            memory: ``[B, N, W]``.

        Returns:
            ``[B, K, N]``: non-negative, each row sums to 1.
        """
        dots = torch.bmm(keys, memory.transpose(1, 2))  # [B, K, N]
        norms = keys.norm(dim=-1, keepdim=True) * memory.norm(dim=-1).unsqueeze(1)
        return torch.softmax(beta * dots / (norms + eps), dim=-1)

    def least_used(self, usage: Tensor) -> Tensor:
        """``w^lu [B, R, N]``: head ``r`` one-hot on the ``r``-th least-used slot (ties broken by slot index)."""
        order = torch.argsort(usage, dim=-1, stable=True)[:, : self.heads]  # [B, R]
        return F.one_hot(order, self.slots).to(usage.dtype)

    # ------------------------------------------------------------------ steps
    def write_read(self, h: Tensor, state: MemoryState) -> MemoryState:
        """One support step: LRU write of each head's add vector, then a content read with its key. ``h`` is ``[B, H]``."""
        key, add, gate, beta = self.heads_from(h)  # [B, R, W], [B, R, W], [B, R, 1], [B, R, 1]
        lu_prev = self.least_used(state.usage)
        alpha = torch.sigmoid(gate)
        write_weights = alpha * state.read_weights + (1 - alpha) * lu_prev  # [B, R, N]
        # zero the least-used row (Santoro et al.: cleared before it is written to)
        keep = 1.0 - lu_prev[:, 0]  # [B, N]
        memory = state.memory * keep.unsqueeze(-1) + torch.einsum("brn,brw->bnw", write_weights, add)
        read_weights = self.address(key, beta, memory)
        reads = torch.bmm(read_weights, memory)
        usage = self.gamma * state.usage + read_weights.sum(1) + write_weights.sum(1)
        return MemoryState(memory, usage, read_weights, reads)

    def read(self, h: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Read only (queries): ``h [B, M, H]``, ``memory [B, N, W]`` -> reads ``[B, M, R, W]``, weights ``[B, M, R, N]``."""
        batch, n_query = h.shape[:2]
        key, _, _, beta = self.heads_from(h)  # [B, M, R, W]
        weights = self.address(key.reshape(batch, n_query * self.heads, self.width),
                               beta.reshape(batch, n_query * self.heads, 1), memory)
        reads = torch.bmm(weights, memory)
        return (reads.reshape(batch, n_query, self.heads, self.width),
                weights.reshape(batch, n_query, self.heads, self.slots))


class MANNPredictor:
    """The state of a :class:`MANN` after a support set (controller and memory): answers ``query_x [B, M, *x]``."""

    def __init__(self, learner: "MANN", h: Tensor, c: Tensor, state: MemoryState, support_x: Tensor,
                 support_e: Optional[Tensor] = None, support_y: Optional[Tensor] = None) -> None:
        self.learner, self.h, self.c, self.state = learner, h, c, state
        self.support_x = support_x[:, :0]  # shape reference for checking queries; holds no data
        self.support_e = support_e  # the label memory's keys and labels (with ``label_memory``), kept as they were
        self.support_y = None if support_y is None else support_y.clone()

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(self.support_x, query_x)
        query_e = self.learner.embed_inputs(query_x)
        vote = self.learner.vote(query_e, self.support_e, self.support_y)
        return self.learner.answer_embedded(self.h, self.c, self.state, query_e, vote)


class MANN(ReadsLabelMemory, MetricAuxiliaryLoss, MetaLearner):
    """Memory-augmented neural network (Santoro et al. 2016); see the module docstring.

    Args:
        backbone: embedding of one input ``[*x_shape] -> [E]`` with an ``out_features`` attribute;
            ``None`` gives :func:`rnnmeta.nets.default_backbone` of ``kind``.
        controller_size: LSTM controller units (200 in the paper).
        memory_slots: memory rows ``N`` (128 in the paper).
        memory_width: row width ``W`` (40 in the paper).
        read_heads: read (and write) heads ``R`` (4 in the paper).
        gamma: usage decay of the least-recently-used writes.
        read_sharpness: fixed softmax sharpness of content reads; ``None`` learns it per step
            (``1.0`` is the paper's eq. 3).
        addressing: ``"santoro"`` or ``"shared_key"`` (see the module docstring).
        tie_add_init: ``"santoro"``: start the add-vector weights equal to the key weights.
        key_value_init: classification only: the controller starts as LSTMLearner's first layer
            (:func:`~rnnmeta.learners.sequence.key_value_init_`); with ``nn.LSTMCell``'s default
            initialisation the learner stayed at chance on Omniglot (docs/RECURRENT.md).
        key_std: with ``key_value_init``: scale of the controller's shared input/output-gate embedding
            weights (as :class:`~rnnmeta.learners.LSTMLearner`'s; ``None``: 2.0); with ``matching_init``:
            of its keys (``None``: 1.0).
        input_bias: with ``key_value_init``: the controller's initial input-gate bias (``None``:
            nn.LSTMCell's random bias; negative: sparser writes, as the 20-way LSTMLearner config).
        output_bias: with ``key_value_init``: the controller's initial output-gate bias (``None``: random;
            equal to ``input_bias``: sparse reads, as LSTMLearner's ``output_bias``).
        zero_recurrent: with ``key_value_init``: the controller's recurrent weights start at 0.
        readout_init: with ``key_value_init``: the head's controller inputs start reading the
            label directions of the cell, scaled by this
            (:func:`~rnnmeta.learners.sequence.label_readout_init_`; ``None``: 0.3); ``0`` keeps a random
            head. With ``matching_init``: the head's weight on its class's units (``None``: 1.0).
        metric_loss_weight: classification: in training, add this times ProtoNet's loss
            (:func:`~rnnmeta.learners.protonet.prototype_loss`) on the embeddings the controller reads
            to the query loss; ``0`` (default) adds nothing. Prediction is unchanged.
        matching_init: classification: the controller and the head start as LSTMLearner's with
            ``matching_init`` (:func:`~rnnmeta.learners.sequence.matching_init_`): a matching network over the
            controller's cell, with the memory's reads unread by the controller and the head at first
            (their weights start at 0 and are trained). Replaces the key-value initialisation, whose
            ``input_bias``, ``output_bias`` and ``zero_recurrent`` it refuses.
        label_memory: classification: the sharpness ``beta`` of a second, parameter-free memory of
            (embedding, one-hot label) rows, one per support example, that each query reads with its own
            embedding as the key (:class:`~rnnmeta.learners.label_memory.LabelMemory`); the head reads its
            vote beside ``[h, r]``. ``0`` (default): no label memory.
        label_memory_rows: ``"examples"`` (default: one row per support example) or ``"classes"`` (one row per
            label holding the sum of its examples' embeddings, so the query's cosine is with each class's
            prototype direction).
        vote_readout: with ``label_memory``: the head starts as this gain times the vote, every other
            weight at 0 (:func:`~rnnmeta.learners.label_memory.vote_readout_`; replaces ``readout_init``).
        embedding_dim: ``E``, needed only when ``backbone`` has no ``out_features`` attribute.
        **kwargs: kind, n_way, target_dim, optimizer, lr_scheduler: see :class:`~rnnmeta.learners.base.MetaLearner`.

    Shapes: those of :meth:`~rnnmeta.learners.base.MetaLearner.forward`.
    """

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        controller_size: int = 200,
        memory_slots: int = 128,
        memory_width: int = 40,
        read_heads: int = 4,
        gamma: float = 0.95,
        read_sharpness: Optional[float] = None,
        addressing: Literal["santoro", "shared_key"] = "santoro",
        tie_add_init: bool = True,
        key_value_init: bool = True,
        key_std: Optional[float] = None,
        input_bias: Optional[float] = None,
        output_bias: Optional[float] = None,
        zero_recurrent: bool = False,
        readout_init: Optional[float] = None,
        metric_loss_weight: float = 0.0,
        matching_init: bool = False,
        label_memory: float = 0.0,
        label_memory_rows: MemoryRows = "examples",
        vote_readout: float = 0.0,
        embedding_dim: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(controller_size=controller_size)
        check_label_memory(label_memory, vote_readout, self.kind, label_memory_rows)
        if vote_readout and matching_init:
            raise ValueError("vote_readout and matching_init are two starts of the same head: choose one")
        self.metric_loss_weight = check_metric_loss_weight(metric_loss_weight, self.kind)
        check_read_init(key_value_init and self.kind == CLASSIFICATION, output_bias, zero_recurrent)
        self.backbone = resolve_backbone(backbone, self.kind, track_running_stats=True)
        self.embed_dim = backbone_features(self.backbone, embedding_dim)
        self.label_dim = label_width(self.kind, self.n_way, self.target_dim)
        self.memory = LRUAMemory(
            controller_size, memory_slots, memory_width, read_heads, gamma, read_sharpness,
            addressing=addressing, tie_add_init=tie_add_init,
        )
        read_dim = read_heads * memory_width
        self.controller = nn.LSTMCell(self.embed_dim + self.label_dim + read_dim, controller_size)
        self.label_memory = LabelMemory(self.n_way, label_memory, label_memory_rows) if label_memory else None
        self.head = nn.Linear(controller_size + read_dim + (self.n_way if label_memory else 0), self.output_dim)
        if matching_init:
            check_matching_init(self.kind, 1, False, input_bias, output_bias, zero_recurrent)
            matching_init_(self.controller, self.head, self.embed_dim, self.n_way,
                           **given(key_scale=key_std, readout_scale=readout_init))
        elif key_value_init and self.kind == CLASSIFICATION:
            key_value_init_(self.controller, self.embed_dim, self.label_dim, input_bias=input_bias,
                            output_bias=output_bias, zero_recurrent=zero_recurrent, **given(key_std=key_std))
            if readout_init != 0:
                label_readout_init_(self.head, self.controller, self.embed_dim, self.label_dim, **given(scale=readout_init))
        if vote_readout:
            vote_readout_(self.head, controller_size + read_dim, self.n_way, vote_readout)

    # ---------------------------------------------------------------- the two phases
    def read_support(self, support_x: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor, MemoryState]:
        """Run controller and memory over the support sequence from a fresh memory.

        Returns:
            controller ``h``, ``c`` (``[B, H]``) and the :class:`MemoryState` after the last support step.
        """
        return self.read_embedded(self.embed_inputs(support_x), support_y)

    def read_embedded(self, support_e: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor, MemoryState]:
        """:meth:`read_support` from the support embeddings ``[B, S, E]``."""
        batch, n_support = support_e.shape[:2]
        steps = torch.cat([support_e, encode_labels(support_y, self.kind, self.n_way)], dim=-1)
        state = self.memory.initial_state(batch, steps.device, steps.dtype)
        h = steps.new_zeros(batch, self.controller.hidden_size)
        c = torch.zeros_like(h)
        for t in range(n_support):
            h, c = self.controller(torch.cat([steps[:, t], state.reads.flatten(1)], dim=-1), (h, c))
            state = self.memory.write_read(h, state)
        return h, c, state

    def answer_embedded(self, h: Tensor, c: Tensor, state: MemoryState, e: Tensor, vote: Optional[Tensor] = None) -> Tensor:
        """One read-only step per query ``e [B, M, E]`` from the support state: preds ``[B, M, output_dim]``.

        ``vote [B, M, n_way]``: the label memory's, read by the head beside ``[h, r]`` (with ``label_memory``).
        """
        batch, n_query = e.shape[:2]
        prev_reads = state.reads.flatten(1).unsqueeze(1).expand(batch, n_query, -1)
        inputs = torch.cat([e, e.new_zeros(batch, n_query, self.label_dim), prev_reads], dim=-1)
        h0, c0 = (s.unsqueeze(1).expand(batch, n_query, s.shape[-1]).flatten(0, 1) for s in (h, c))
        hq = self.controller(inputs.reshape(batch * n_query, -1), (h0, c0))[0].reshape(batch, n_query, h.shape[-1])
        reads, _ = self.memory.read(hq, state.memory)
        features = [hq, reads.flatten(2)] + ([] if vote is None else [vote])
        return self.head(torch.cat(features, dim=-1))

    # ---------------------------------------------------------------- the contract
    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """``[B, M, n_way]`` logits or ``[B, M, d_y]`` predictions for ``query_x`` (see class docstring)."""
        self.check_inputs(support_x, support_y)
        check_query(support_x, query_x)
        return self.predict_embedded(self.embed_inputs(support_x), support_y, self.embed_inputs(query_x))

    def embed_inputs(self, x: Tensor) -> Tensor:
        """``[B, T, *x_shape] -> [B, T, E]`` in one backbone call: what the controller reads."""
        return embed(self.backbone, x)

    def predict_embedded(self, support_e: Tensor, support_y: Tensor, query_e: Tensor) -> Tensor:
        """:meth:`forward` from the embeddings of :meth:`embed_inputs`: ``[B, S, E]``, ``[B, M, E]`` -> ``[B, M, output_dim]``."""
        h, c, state = self.read_embedded(support_e, support_y)
        return self.answer_embedded(h, c, state, query_e, self.vote(query_e, support_e, support_y))

    # ---------------------------------------------------------------- the online protocol
    def predict_stream(self, x: Tensor, prev_y: Tensor) -> Tensor:
        """Online protocol (Santoro et al. 2016): logits ``[B, T, n_way]`` for every step of a labelled stream.

        From a fresh memory, step ``t`` feeds the controller ``[embed(x_t), one_hot(prev_y_t), r_{t-1}]``,
        writes and reads the memory, and predicts ``y_t`` from ``Linear([h_t, r_t])`` (the paper's setting).

        Args:
            x: ``[B, T, *x_shape]``.
            prev_y: ``[B, T]`` int64, the labels one step late (:func:`~rnnmeta.data.online.shift_labels`).
        """
        if self.kind != CLASSIFICATION:
            raise ValueError(f"predict_stream is defined for classification learners; this one is {self.kind!r}")
        check_stream_inputs(x, prev_y, self.n_way)
        batch, steps_n = x.shape[:2]
        e, labels_before = embed(self.backbone, x), encode_previous_labels(prev_y, self.n_way)
        steps = torch.cat([e, labels_before], dim=-1)
        votes = None if self.label_memory is None else self.label_memory.stream(e, labels_of_steps(labels_before))
        state = self.memory.initial_state(batch, steps.device, steps.dtype)
        h = steps.new_zeros(batch, self.controller.hidden_size)
        c = torch.zeros_like(h)
        outputs = []
        for t in range(steps_n):
            h, c = self.controller(torch.cat([steps[:, t], state.reads.flatten(1)], dim=-1), (h, c))
            state = self.memory.write_read(h, state)
            features = [h, state.reads.flatten(1)] + ([] if votes is None else [votes[:, t]])
            outputs.append(self.head(torch.cat(features, dim=-1)))
        return torch.stack(outputs, dim=1)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> MANNPredictor:
        """Read the support set once; the returned predictor holds controller state and memory after it."""
        self.check_inputs(support_x, support_y)
        support_e = self.embed_inputs(support_x)
        h, c, state = self.read_embedded(support_e, support_y)
        if self.label_memory is None:
            return MANNPredictor(self, h, c, state, support_x)
        return MANNPredictor(self, h, c, state, support_x, support_e, support_y)
