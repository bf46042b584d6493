"""SNAIL: a Simple Neural Attentive meta-Learner (Mishra, Rohaninejad, Chen & Abbeel, ICLR 2018).

SNAIL reads a task as one sequence: the ``S = N * K`` labelled support examples, each as its
embedding concatenated with its one-hot label, then the query with an all-zero label. A causal
stack of temporal-convolution (TC) and attention blocks (:mod:`rnnmeta.learners.snail_blocks`)
runs over the sequence and the prediction is read at the query's position. The network's only
memory is the sequence itself.

Queries are answered independently: the support prefix is encoded once (every block's state
after the prefix is cached) and the ``M`` queries of a task are answered in one batched pass as
``M`` independent next steps, each reading the support set and itself only. The result equals
running one sequence ``support + [query]`` per query (:meth:`SNAIL.forward_naive`), at a
fraction of the cost.

Reference:
    N. Mishra, M. Rohaninejad, X. Chen, P. Abbeel. A Simple Neural Attentive Meta-Learner.
    ICLR 2018. https://arxiv.org/abs/1707.03141
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION
from rnnmeta.learners.auxiliary import MetricAuxiliaryLoss
from rnnmeta.learners.base import MetaLearner
from rnnmeta.learners.label_memory import LabelMemory, MemoryRows, ReadsLabelMemory, check_label_memory
from rnnmeta.learners.label_memory import vote_readout_ as memory_vote_readout_
from rnnmeta.learners.sequence import check_metric_loss_weight, check_query, encode_labels, label_width
from rnnmeta.learners.snail_blocks import AttentionBlock, BlockState, SNAILNetwork, map_state
from rnnmeta.nets import backbone_features, resolve_backbone


def similarity_init_(block: AttentionBlock, embed_dim: int) -> None:
    """Initialise an attention block over ``[embedding (embed_dim), label]`` steps as a similarity vote (in place).

    Query and key maps get the same (semi-)orthogonal weights ``W`` on the embedding channels and
    zeros on the label channels and biases, so a score is ``e_q^T W^T W e_s / sqrt(d_k)``: with
    ``d_k >= embed_dim``, ``W^T W = I`` and the score is ``e_q . e_s / sqrt(d_k)`` exactly (for
    layer-normalised embeddings ``embed_dim / sqrt(d_k) * cos(e_q, e_s)``); with a smaller ``d_k``
    it is the dot product of an orthogonal projection. The value map reads only the label channels
    (``N(0, 1)`` weights). See :class:`SNAIL` (``similarity_init``).
    """
    with torch.no_grad():
        nn.init.orthogonal_(block.query.weight[:, :embed_dim])
        block.key.weight[:, :embed_dim].copy_(block.query.weight[:, :embed_dim])
        for linear in (block.query, block.key):
            linear.weight[:, embed_dim:].zero_()
            linear.bias.zero_()
        block.value.weight[:, :embed_dim].zero_()
        block.value.weight[:, embed_dim:].normal_(0.0, 1.0)
        block.value.bias.zero_()


def vote_readout_(network: SNAILNetwork, embed_dim: int, n_way: int, gain: float) -> None:
    """Initialise SNAIL's output layer to pass the first attention block's vote on (in place).

    After :func:`similarity_init_`, the first ``n_way`` value channels of the first attention
    block are set to copy the one-hot label channels, so their read at a query is the attention
    mass on the support examples of each class (the vote of :meth:`SNAIL.attention_vote`). The
    output layer (the final 1x1 convolution) starts at zero except ``gain`` times the identity
    from those ``n_way`` read channels to the ``n_way`` logits: at initialisation
    ``logits[c] = gain * mass(c)``, an attention-weighted nearest-neighbour vote (a matching
    network, Vinyals et al. 2016), and the gradient reaches the embedding through the attention
    scores from the first step. Every other feature starts with zero weight and joins as training
    moves the output layer. The architecture is unchanged (Mishra et al. 2018).
    """
    block = network.blocks[0]
    if not isinstance(block, AttentionBlock) or block.value_size < n_way:
        raise ValueError(
            f"vote_readout needs a first attention block with value size >= n_way={n_way}, got "
            f"{getattr(block, 'value_size', None)} (raise key_sizes/value_sizes[0])"
        )
    with torch.no_grad():
        block.value.weight[:n_way].zero_()
        block.value.weight[:n_way, embed_dim:embed_dim + n_way].copy_(torch.eye(n_way))
        network.output.weight.zero_()
        network.output.bias.zero_()
        read = block.in_channels  # the first block's read follows its input channels in every later feature
        network.output.weight[:, read:read + n_way].copy_(gain * torch.eye(n_way))


class SNAILPredictor:
    """Answers query batches of the tasks whose support set was encoded by :meth:`SNAIL.adapt`.

    Holds the cached per-block states of the support prefix (and, when built with gradients
    enabled, the graph to the learner's parameters) and, with ``label_memory``, the support
    embeddings and labels the memory reads; never re-reads the support set.

    Shapes:
        ``query_x [B, M, *x_shape] -> [B, M, n_way]`` logits or ``[B, M, d_y]``.
    """

    def __init__(self, learner: "SNAIL", states: list[BlockState], batch_size: int, x_shape: tuple[int, ...],
                 support_e: Optional[Tensor] = None, support_y: Optional[Tensor] = None) -> None:
        self.learner, self.states = learner, states
        self.batch_size, self.x_shape = batch_size, x_shape
        self.support_e = support_e  # the label memory's keys and labels (with ``label_memory``), kept as they were
        self.support_y = None if support_y is None else support_y.clone()

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(torch.empty(self.batch_size, 0, *self.x_shape), query_x)  # an empty shape reference
        return self.learner.answer(self.states, query_x, self.support_e, self.support_y)

    def detach(self) -> "SNAILPredictor":
        """A copy whose cached states (and label memory keys) are cut from the autograd graph."""
        support_e = None if self.support_e is None else self.support_e.detach()
        return SNAILPredictor(self.learner, map_state(self.states, Tensor.detach), self.batch_size, self.x_shape,
                              support_e, self.support_y)


class SNAIL(ReadsLabelMemory, MetricAuxiliaryLoss, MetaLearner):
    """SNAIL few-shot learner for classification and regression.

    Each sequence step is ``concat(embedding(x), label)`` where the label is the one-hot class
    (classification; all zeros for the query) or ``concat(y, 1)`` (regression: the target and a
    "labelled" flag; all zeros for the query, so a target of 0 is not mistaken for a query).
    The stack is :class:`~rnnmeta.learners.snail_blocks.SNAILNetwork` (defaults: the Omniglot layout).

    ``T = n_way * max_shots + 1`` (classification) or ``max_shots + 1`` (regression, where
    ``max_shots`` counts support points), so one model serves every ``K <= max_shots``: the
    convolutions pad on the left only, so a shorter sequence needs no padding or mask. All tasks
    of a batch share ``K``; ``K`` may change from batch to batch.

    The default Conv4 tracks running statistics, so that in evaluation mode each query's
    embedding (and hence its answer) depends on that query and the support set alone.

    Args:
        backbone: embedding network ``[..., *x_shape] -> [..., E]``; ``None`` gives
            ``Conv4(track_running_stats=True)`` (classification, 28x28 grey images) or
            ``MLP(1, [40, 40])`` (regression on scalar inputs).
        max_shots: largest ``K`` the model must handle (sets ``T``).
        key_sizes: key (and query) size of each attention block.
        value_sizes: value size of each attention block (same length as ``key_sizes``).
        tc_filters: filters per dense block of each TC block (``len(key_sizes) - 1`` entries).
        embedding_norm: layer-normalise the embedding (per example, so queries stay independent)
            before it is concatenated with the label. ``None`` (default): as ``similarity_init``
            (docs/SNAIL.md).
        similarity_init: initialise the first attention block as a similarity vote
            (:func:`similarity_init_`, :meth:`SNAIL.attention_vote`); only initial values differ
            from the paper.
        vote_readout: start the output layer as ``vote_readout`` times the first attention
            block's vote over the support labels and zero elsewhere (:func:`vote_readout_`), so
            that the untrained SNAIL answers as an attention-weighted nearest neighbour; ``0``
            (default) keeps the output layer's default initialisation. Needs ``similarity_init``
            and classification; only initial values differ from the paper. With ``label_memory``
            it starts the answer as this gain times the label memory's vote instead (the output
            layer at 0, the vote head at ``gain * I``), as LSTMLearner's and MANN's ``vote_readout``.
        label_memory: classification: the sharpness ``beta`` of a parameter-free label memory over
            the support set (:class:`~rnnmeta.learners.label_memory.LabelMemory`, Kaiser et al. 2017:
            each support embedding a key, its one-hot label the value, read by
            ``softmax(beta * cos)`` with the query's own embedding); a linear vote head adds its
            vote ``[B, M, n_way]`` to the network's answer (the answer reads ``[features, vote]``).
            ``0`` (default): no memory, as the paper. docs/TEXT.md measures it on CLINC150.
        label_memory_rows: ``"examples"`` (default: one row per support example) or ``"classes"``
            (one row per label: the sum of its examples' embeddings, a prototype's direction).
        fixed_similarity: keep the first attention block's query and key maps at their similarity
            initialisation (no gradient), so its scores stay the embeddings' scaled dot products
            ``e_q . e_s / sqrt(d_k)`` (with ``key_sizes[0] >= E``; a fixed orthogonal projection of them
            with a smaller key size) and the embedding network alone learns the metric, as in a
            matching network (Vinyals et al. 2016). Needs ``similarity_init``. Measured on CLINC150
            (docs/TEXT.md, "SNAIL's fixed similarity"): a learned similarity overfits the 75 training
            intents and its vote ends 3 to 8 points under a cosine nearest neighbour on the same
            embeddings; fixed, the two agree.
        metric_loss_weight: classification: in training, add this times ProtoNet's loss on the same
            (layer-normalised) embeddings (:class:`~rnnmeta.learners.auxiliary.MetricAuxiliaryLoss`, as
            LSTMLearner's and MANN's); ``0`` (default) leaves training as the paper's.
        paper_dilations: TC dilations ``2, 4, ..., 2^n`` as the paper's Algorithm 2; ``False``
            (default) uses ``1, 2, ..., 2^(n-1)`` (see :class:`~rnnmeta.learners.snail_blocks.TCBlock`).
        embedding_dim: ``E``, needed only when ``backbone`` has no ``out_features`` attribute.
        **kwargs: kind, n_way, target_dim, optimizer, lr_scheduler: see :class:`~rnnmeta.learners.base.MetaLearner`.

    Shapes: those of :meth:`~rnnmeta.learners.base.MetaLearner.forward`, with ``S <= T - 1``.

    Example::

        learner = SNAIL(n_way=5, max_shots=5)
        logits = learner(support_x, support_y, query_x)          # [B, M, 5]
        predict = learner.adapt(support_x, support_y)            # support encoded once
        more_logits = predict(other_query_x)
    """

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        max_shots: int = 5,
        key_sizes: list[int] = [64, 256, 512],  # noqa: B006
        value_sizes: list[int] = [32, 128, 256],  # noqa: B006
        tc_filters: list[int] = [128, 128],  # noqa: B006
        paper_dilations: bool = False,
        embedding_norm: Optional[bool] = None,
        similarity_init: bool = False,
        vote_readout: float = 0.0,
        fixed_similarity: bool = False,
        metric_loss_weight: float = 0.0,
        label_memory: float = 0.0,
        label_memory_rows: MemoryRows = "examples",
        embedding_dim: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.metric_loss_weight = check_metric_loss_weight(metric_loss_weight, self.kind)
        check_label_memory(label_memory, 0.0, self.kind, label_memory_rows)
        if max_shots < 1:
            raise ValueError(f"max_shots must be >= 1, got {max_shots}")
        backbone = resolve_backbone(backbone, self.kind, track_running_stats=True)
        embed = backbone_features(backbone, embedding_dim)
        self.backbone = backbone
        self.embedding_dim = embed
        self.max_shots = max_shots
        self.label_channels = label_width(self.kind, self.n_way, self.target_dim)
        self.seq_len = (self.n_way if self.kind == CLASSIFICATION else 1) * max_shots + 1
        self.network = SNAILNetwork(
            in_channels=embed + self.label_channels,
            seq_len=self.seq_len,
            out_features=self.output_dim,
            key_sizes=list(key_sizes),
            value_sizes=list(value_sizes),
            tc_filters=list(tc_filters),
            tc_first_dilation=2 if paper_dilations else 1,
        )
        if embedding_norm is None:
            embedding_norm = similarity_init
        self.norm = nn.LayerNorm(embed) if embedding_norm else nn.Identity()
        if similarity_init:
            similarity_init_(self.network.blocks[0], embed)
        #: the label memory and the vote head that adds its vote to the answer (``None`` without ``label_memory``)
        self.label_memory = LabelMemory(self.n_way, label_memory, label_memory_rows) if label_memory else None
        self.vote_head = nn.Linear(self.n_way, self.output_dim, bias=False) if label_memory else None
        if vote_readout < 0:
            raise ValueError(f"vote_readout must be >= 0 (the gain of the initial vote readout), got {vote_readout}")
        if vote_readout and self.vote_head is not None:
            with torch.no_grad():  # the answer starts as gain * the label memory's vote
                self.network.output.weight.zero_()
                self.network.output.bias.zero_()
            memory_vote_readout_(self.vote_head, 0, self.n_way, vote_readout)
        elif vote_readout:
            if not similarity_init or self.kind != CLASSIFICATION:
                raise ValueError(
                    f"vote_readout={vote_readout} reads the first attention block's similarity vote over class labels: "
                    f"it needs similarity_init=True and kind='classification', got similarity_init={similarity_init}, "
                    f"kind={self.kind!r}"
                )
            vote_readout_(self.network, embed, self.n_way, vote_readout)
        if not isinstance(fixed_similarity, bool):
            raise TypeError(f"fixed_similarity must be true or false, got fixed_similarity={fixed_similarity!r}")
        if fixed_similarity and not similarity_init:
            raise ValueError("fixed_similarity=True keeps the first attention block's query and key maps at their similarity "
                             f"initialisation: it needs similarity_init=True, got similarity_init={similarity_init}")
        self.fixed_similarity = fixed_similarity
        if fixed_similarity:
            first = self.network.blocks[0]
            for linear in (first.query, first.key):
                linear.requires_grad_(False)

    # --------------------------------------------------------------- sequence
    def _check_length(self, n_support: int) -> None:
        if n_support + 1 > self.seq_len:
            raise ValueError(
                f"SNAIL was built for sequences of at most T={self.seq_len} steps (max_shots={self.max_shots}), "
                f"but a support set of {n_support} examples plus the query needs {n_support + 1}; raise max_shots"
            )

    def embed(self, x: Tensor) -> Tensor:
        """Backbone embedding ``[B, L, *x_shape] -> [B, L, E]``."""
        b, n = x.shape[:2]
        e = self.backbone(x.reshape(b * n, *x.shape[2:]))
        if e.shape[-1] != self.embedding_dim or e.numel() != b * n * self.embedding_dim:
            raise ValueError(
                f"backbone output {list(e.shape)} does not match embedding_dim={self.embedding_dim} per example"
            )
        return self.norm(e.reshape(b, n, self.embedding_dim))

    def attention_vote(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """How the first attention block spreads each query's attention over the support classes.

        Runs the first block on ``support + [query]`` for each query and sums its attention
        weights over the support positions of each class (the rest goes to the query's own
        position). ``argmax`` over classes is the *attention vote*: a nearest-neighbour-like
        prediction that needs no training when the block compares queries with support examples.
        At the default initialisation it is near chance; with ``similarity_init`` it is not
        (measured in ``docs/SNAIL.md``).

        Returns:
            ``[B, M, n_way]`` attention mass per class (classification only).
        """
        if self.kind != CLASSIFICATION:
            raise ValueError(f"attention_vote is defined for classification learners; this one is {self.kind!r}")
        self.check_inputs(support_x, support_y, query_x)
        _, weights = self.network.blocks[0](self._query_sequences(support_x, support_y, query_x), return_weights=True)
        b, m, s = *query_x.shape[:2], support_x.shape[1]
        to_support = weights[:, -1, :s].reshape(b, m, s)  # weights: [B*M, S+1, S+1]
        return to_support @ F.one_hot(support_y, self.n_way).to(to_support.dtype)

    def _query_sequences(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """One sequence ``support + [query]`` per query: ``[B * M, S + 1, C]``."""
        return self._sequences(self.support_steps(support_x, support_y), self.query_steps(query_x))

    @staticmethod
    def _sequences(sup: Tensor, qry: Tensor) -> Tensor:
        """Support steps ``[B, S, C]`` and query steps ``[B, M, C]`` -> one sequence per query ``[B * M, S + 1, C]``."""
        b, s, c = sup.shape
        m = qry.shape[1]
        return torch.cat([sup.unsqueeze(1).expand(b, m, s, c), qry.unsqueeze(2)], dim=2).reshape(b * m, s + 1, c)

    def support_steps(self, support_x: Tensor, support_y: Tensor) -> Tensor:
        """Sequence steps of the support set: ``concat(embedding, label channels)`` ``[B, S, C]``."""
        return self.support_steps_embedded(self.embed(support_x), support_y)

    def support_steps_embedded(self, e: Tensor, support_y: Tensor) -> Tensor:
        """:meth:`support_steps` from the embeddings ``e [B, S, E]`` of :meth:`embed`."""
        return torch.cat([e, encode_labels(support_y, self.kind, self.n_way).to(e.dtype)], dim=-1)

    def query_steps(self, query_x: Tensor) -> Tensor:
        """Sequence steps of the queries: ``concat(embedding, zeros)`` ``[B, M, C]``."""
        return self.query_steps_embedded(self.embed(query_x))

    def query_steps_embedded(self, e: Tensor) -> Tensor:
        """:meth:`query_steps` from the embeddings ``e [B, M, E]`` of :meth:`embed`."""
        return torch.cat([e, e.new_zeros(*e.shape[:2], self.label_channels)], dim=-1)

    def embed_inputs(self, x: Tensor) -> Tensor:
        """The embeddings the network reads (:meth:`embed`), for :class:`~rnnmeta.learners.auxiliary.MetricAuxiliaryLoss`."""
        return self.embed(x)

    def predict_embedded(self, support_e: Tensor, support_y: Tensor, query_e: Tensor) -> Tensor:
        """:meth:`forward` from the embeddings of :meth:`embed`: ``[B, S, E]``, ``[B, M, E]`` -> ``[B, M, output_dim]``."""
        self._check_length(support_e.shape[1])
        sup, qry = self.support_steps_embedded(support_e, support_y), self.query_steps_embedded(query_e)
        if qry.shape[1] == 1:  # one query: its one sequence is cheaper than encode + step
            out = self.network(self._sequences(sup, qry))[:, -1].reshape(*qry.shape[:2], -1)
        else:
            out = self.network.step(qry, self.network.encode(sup))
        return self.add_vote(out, query_e, support_e, support_y)

    def add_vote(self, out: Tensor, query_e: Tensor, support_e: Optional[Tensor], support_y: Optional[Tensor]) -> Tensor:
        """``out [B, M, output_dim]`` plus the vote head's reading of the label memory's vote (``out`` without ``label_memory``)."""
        vote = self.vote(query_e, support_e, support_y)
        return out if vote is None else out + self.vote_head(vote)

    # ---------------------------------------------------------------- answers
    def encode_support(self, support_x: Tensor, support_y: Tensor) -> list[BlockState]:
        """Run the causal network over the support prefix once; the per-block states."""
        return self.encode_support_embedded(self.embed(support_x), support_y)

    def encode_support_embedded(self, support_e: Tensor, support_y: Tensor) -> list[BlockState]:
        """:meth:`encode_support` from the support embeddings ``[B, S, E]`` of :meth:`embed`."""
        self._check_length(support_e.shape[1])
        return self.network.encode(self.support_steps_embedded(support_e, support_y))

    def answer(self, states: list[BlockState], query_x: Tensor, support_e: Optional[Tensor] = None,
               support_y: Optional[Tensor] = None) -> Tensor:
        """Predictions ``[B, M, out]`` for ``M`` queries, each the next step after the encoded support; with
        ``label_memory``, plus the vote over the support embeddings ``support_e [B, S, E]`` and labels ``support_y``."""
        query_e = self.embed(query_x)
        return self.add_vote(self.network.step(self.query_steps_embedded(query_e), states), query_e, support_e, support_y)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        self.check_inputs(support_x, support_y, query_x)
        return self.predict_embedded(self.embed(support_x), support_y, self.embed(query_x))

    def predict_stream(self, x: Tensor, prev_y: Tensor) -> Tensor:
        """Online protocol (Santoro et al. 2016): logits ``[B, T, n_way]`` for every step of a labelled stream.

        Step ``t`` reads ``[embed(x_t), one_hot(prev_y_t)]``; the causal network's output at ``t`` predicts ``y_t``.

        Args:
            x: ``[B, T, *x_shape]`` with ``T <= n_way * max_shots + 1``.
            prev_y: ``[B, T]`` int64, the labels one step late.
        """
        from rnnmeta.learners.online import check_stream_inputs, encode_previous_labels, labels_of_steps

        if self.kind != CLASSIFICATION:
            raise ValueError(f"predict_stream is defined for classification learners; this one is {self.kind!r}")
        check_stream_inputs(x, prev_y, self.n_way)
        if x.shape[1] > self.seq_len:
            raise ValueError(
                f"SNAIL was built for sequences of at most T={self.seq_len} steps (max_shots={self.max_shots}), "
                f"got a stream of {x.shape[1]}; build it with max_shots >= {(x.shape[1] - 1 + self.n_way - 1) // self.n_way}"
            )
        e, labels_before = self.embed(x), encode_previous_labels(prev_y, self.n_way)
        out = self.network(torch.cat([e, labels_before.to(e.dtype)], dim=-1))
        if self.label_memory is None:
            return out
        return out + self.vote_head(self.label_memory.stream(e, labels_of_steps(labels_before)))

    def adapt(self, support_x: Tensor, support_y: Tensor) -> SNAILPredictor:
        """Encode the support set once; the predictor answers any later query batch from the cache."""
        self.check_inputs(support_x, support_y)
        support_e = self.embed(support_x)
        states = self.encode_support_embedded(support_e, support_y)
        shape = (support_x.shape[0], tuple(support_x.shape[2:]))
        if self.label_memory is None:
            return SNAILPredictor(self, states, *shape)
        return SNAILPredictor(self, states, *shape, support_e, support_y)

    def forward_naive(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Reference answer: one sequence ``support + [query]`` per query; equals :meth:`forward` up to rounding."""
        self.check_inputs(support_x, support_y, query_x)
        self._check_length(support_x.shape[1])
        out = self.network(self._query_sequences(support_x, support_y, query_x))[:, -1]  # at the query's position
        out = out.reshape(*query_x.shape[:2], -1)
        if self.label_memory is None:
            return out
        return self.add_vote(out, self.embed(query_x), self.embed(support_x), support_y)
