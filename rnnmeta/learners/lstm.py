"""The black-box LSTM meta-learner (Hochreiter et al. 2001; Santoro et al. 2016).

An LSTM reads the support set of a task as a sequence, one labelled example per step
(``[embed(x_t), label(y_t)]``: the one-hot label, or the target followed by a ``1`` flag), and
answers each query from the state after the last support example with one step
``[embed(q), 0]``. The queries of all tasks take that step in one batched pass from their task's
state, so no query's input reaches another's and no query label is ever read.

Three choices take the learner off the chance plateau within a few dozen meta-iterations
(measured in ``docs/RECURRENT.md``): a layer-normalised embedding, the *key-value
initialisation* of the first layer (:func:`~rnnmeta.learners.sequence.key_value_init_`: at
initialisation the head sees a kernel vote over the support labels) and, for classification,
the *label readout* of the head (:func:`~rnnmeta.learners.sequence.label_readout_init_`).
On 20-way tasks *sparse reads* (``output_bias`` equal to a negative ``input_bias``, and
``zero_recurrent``) make a query read as few units as an example writes, which sharpens the vote.
``matching_init`` starts the layer and the head as a matching network instead
(:func:`~rnnmeta.learners.sequence.matching_init_`): before training, each class's logit is about the
dot product of the query's embedding with that class's support examples (the 20-way start that
measured best, docs/RECURRENT.md).
``metric_loss_weight`` adds ProtoNet's loss on the same embeddings in training (an auxiliary
loss: the network, its inputs and its predictions are unchanged). ``label_memory`` gives the head a
second input, the vote of a parameter-free label memory over the support set
(:mod:`rnnmeta.learners.label_memory`), and ``vote_readout`` starts the head as that vote.
:meth:`LSTMLearner.predict_stream` runs the same network on the online protocol of Santoro et al.

References:
    S. Hochreiter, A. S. Younger, P. R. Conwell. "Learning to learn using gradient descent". ICANN 2001.
    A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap. "Meta-learning with
    memory-augmented neural networks". ICML 2016.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION
from rnnmeta.learners.base import MetaLearner
from rnnmeta.learners.online import check_stream_inputs, encode_previous_labels, labels_of_steps
from rnnmeta.learners.auxiliary import MetricAuxiliaryLoss
from rnnmeta.learners.label_memory import LabelMemory, MemoryRows, ReadsLabelMemory, check_label_memory, vote_readout_
from rnnmeta.learners.sequence import check_metric_loss_weight, check_positive, check_query, check_read_init, embed
from rnnmeta.learners.sequence import check_matching_init, encode_labels, given, key_value_init_
from rnnmeta.learners.sequence import label_readout_init_, label_width, matching_init_
from rnnmeta.nets import backbone_features, resolve_backbone

__all__ = ["LSTMLearner", "LSTMPredictor", "key_value_init_", "label_readout_init_", "matching_init_"]


# --------------------------------------------------------------------------- the learner
class LSTMPredictor:
    """The state of an :class:`LSTMLearner` after a support set: answers ``query_x [B, M, *x]``."""

    def __init__(self, learner: "LSTMLearner", h: Tensor, c: Tensor, support_x: Tensor,
                 support_e: Optional[Tensor] = None, support_y: Optional[Tensor] = None) -> None:
        self.learner, self.h, self.c = learner, h, c
        self.support_x = support_x[:, :0]  # shape reference for checking queries; holds no data
        self.support_e = support_e  # the label memory's keys and labels (with ``label_memory``), kept as they were
        self.support_y = None if support_y is None else support_y.clone()

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(self.support_x, query_x)
        query_e = self.learner.embed_inputs(query_x)
        return self.learner.answer_embedded(self.h, self.c, query_e, self.learner.vote(query_e, self.support_e, self.support_y))


class LSTMLearner(ReadsLabelMemory, MetricAuxiliaryLoss, MetaLearner):
    """An LSTM over the support set; each query answered from the state after it (see module docstring).

    Args:
        backbone: embedding of one input ``[*x_shape] -> [E]`` with an ``out_features`` attribute;
            ``None`` gives :func:`rnnmeta.nets.default_backbone` of ``kind`` (Conv4 with running statistics, or the sinusoid MLP).
        hidden_size: LSTM units per layer.
        num_layers: stacked LSTM layers.
        embedding_norm: layer-normalise the embedding before the LSTM (see the module docstring).
        key_value_init: key-value initialisation of the first LSTM layer (see the module docstring);
            ``False`` keeps nn.LSTM's default initialisation.
        key_std: scale of the shared input/output-gate embedding weights of that initialisation
            (``None``: 2.0), or of the keys of ``matching_init`` (``None``: 1.0).
        forget_bias: initial forget-gate bias of either initialisation (``None``: 3.0 for the key-value
            one, 6.0 for ``matching_init``, where every support example's write must survive).
        input_bias: initial input-gate bias of that initialisation (``None``: nn.LSTM's random bias).
        output_bias: initial output-gate bias of that initialisation (``None``: nn.LSTM's random bias;
            equal to ``input_bias``: sparse reads as well as sparse writes).
        zero_recurrent: that initialisation starts the first layer's recurrent weights at 0.
        readout_init: classification with ``key_value_init`` and one layer: the head starts reading
            the cell direction of each label, scaled by this (:func:`label_readout_init_`; ``None``: 0.3);
            ``0`` keeps nn.Linear's random head. Regression, and a stack of layers (whose head reads the
            top layer, not the one the labels are written into), keep the random head. With
            ``matching_init``: the head's weight on its class's units (``None``: 1.0).
        label_slots: classification with ``key_value_init``: each label writes into its own block of
            ``hidden_size // n_way`` units, all blocks with the same keys, so that before training each
            class's logit is a kernel between the query and that class's support examples, without
            cross-talk from the other labels (:func:`key_value_init_`; measured in docs/RECURRENT.md).
        metric_loss_weight: classification: in training, add this times ProtoNet's loss
            (:func:`~rnnmeta.learners.protonet.prototype_loss`, Snell et al. 2017) on the embeddings the
            LSTM reads (after the layer norm) to the query loss; ``0`` (default) adds nothing.
            Prediction is unchanged (docs/RECURRENT.md).
        matching_init: classification with one layer: the first layer and the head start as a matching
            network instead (:func:`~rnnmeta.learners.sequence.matching_init_`): label ``j`` opens the
            input gates of its own block of ``hidden_size // n_way`` units, which store a projection of
            the example's embedding; the query's output gates read the same projection, so that before
            training class ``j``'s logit is about the dot product of the query's embedding with class
            ``j``'s support examples (docs/RECURRENT.md, "Starting as a matching network"). Replaces
            the key-value initialisation, whose ``input_bias``, ``output_bias``, ``zero_recurrent`` and
            ``label_slots`` it refuses.
        label_memory: classification: the sharpness ``beta`` of a label memory over the support set
            (:class:`~rnnmeta.learners.label_memory.LabelMemory`: each example's embedding is a key, its
            one-hot label the value; a query reads ``softmax(beta * cos)`` over them), whose vote the head
            reads beside the LSTM's output; ``0`` (default): no label memory, the head reads the LSTM alone.
        label_memory_rows: ``"examples"`` (default: one row per support example) or ``"classes"`` (one row per
            label holding the sum of its examples' embeddings, so the query's cosine is with each class's
            prototype direction).
        vote_readout: with ``label_memory``: the head starts as this gain times the vote, every other
            weight at 0 (:func:`~rnnmeta.learners.label_memory.vote_readout_`; replaces ``readout_init``);
            ``0`` (default): nn.Linear's initialisation for the vote's inputs.
        embedding_dim: ``E``, needed only when ``backbone`` has no ``out_features`` attribute.
        **kwargs: kind, n_way, target_dim, optimizer, lr_scheduler: see :class:`~rnnmeta.learners.base.MetaLearner`.

    Shapes: those of :meth:`~rnnmeta.learners.base.MetaLearner.forward`.

    Example:
        >>> learner = LSTMLearner(n_way=5)
        >>> predict = learner.adapt(support_x, support_y)   # reads the support set once
        >>> logits = predict(query_x)
    """

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        hidden_size: int = 256,
        num_layers: int = 2,
        embedding_norm: bool = True,
        key_value_init: bool = True,
        key_std: Optional[float] = None,
        forget_bias: Optional[float] = None,
        input_bias: Optional[float] = None,
        output_bias: Optional[float] = None,
        zero_recurrent: bool = False,
        readout_init: Optional[float] = None,
        label_slots: bool = False,
        metric_loss_weight: float = 0.0,
        matching_init: bool = False,
        label_memory: float = 0.0,
        label_memory_rows: MemoryRows = "examples",
        vote_readout: float = 0.0,
        embedding_dim: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(hidden_size=hidden_size, num_layers=num_layers)
        check_label_memory(label_memory, vote_readout, self.kind, label_memory_rows)
        if vote_readout and matching_init:
            raise ValueError("vote_readout and matching_init are two starts of the same head: choose one")
        self.metric_loss_weight = check_metric_loss_weight(metric_loss_weight, self.kind)
        check_read_init(key_value_init, output_bias, zero_recurrent)
        if label_slots and not (key_value_init and self.kind == CLASSIFICATION):
            raise ValueError(
                f"label_slots is an option of the key-value initialisation for classification; got "
                f"key_value_init={key_value_init!r}, kind={self.kind!r}"
            )
        self.backbone = resolve_backbone(backbone, self.kind, track_running_stats=True)
        self.embed_dim = backbone_features(self.backbone, embedding_dim)
        self.label_dim = label_width(self.kind, self.n_way, self.target_dim)
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.norm = nn.LayerNorm(self.embed_dim) if embedding_norm else nn.Identity()
        self.lstm = nn.LSTM(self.embed_dim + self.label_dim, hidden_size, num_layers=num_layers, batch_first=True)
        if matching_init:
            check_matching_init(self.kind, num_layers, label_slots, input_bias, output_bias, zero_recurrent)
        elif key_value_init:  # before the head is built, so that a seed gives the weights it gave before matching_init
            key_value_init_(self.lstm, self.embed_dim, self.label_dim, input_bias=input_bias, label_slots=label_slots,
                            output_bias=output_bias, zero_recurrent=zero_recurrent,
                            **given(key_std=key_std, forget_bias=forget_bias))
        self.label_memory = LabelMemory(self.n_way, label_memory, label_memory_rows) if label_memory else None
        self.head = nn.Linear(hidden_size + (self.n_way if label_memory else 0), self.output_dim)
        if matching_init:
            matching_init_(self.lstm, self.head, self.embed_dim, self.n_way,
                           **given(key_scale=key_std, readout_scale=readout_init, forget_bias=forget_bias))
        elif key_value_init and readout_init != 0 and self.kind == CLASSIFICATION and num_layers == 1:
            label_readout_init_(self.head, self.lstm, self.embed_dim, self.label_dim, **given(scale=readout_init))
        if vote_readout:
            vote_readout_(self.head, hidden_size, self.n_way, vote_readout)

    # ---------------------------------------------------------------- the two phases
    def read_support(self, support_x: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """Run the LSTM over the support sequence: final ``(h, c)``, each ``[num_layers, B, H]``."""
        return self.read_embedded(self.embed_inputs(support_x), support_y)

    def read_embedded(self, support_e: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`read_support` from the embeddings ``[B, S, E]`` of :meth:`embed_inputs`."""
        _, (h, c) = self.lstm(torch.cat([support_e, encode_labels(support_y, self.kind, self.n_way)], dim=-1))
        return h, c

    def embed_inputs(self, x: Tensor) -> Tensor:
        """``[B, T, *x_shape] -> [B, T, E]``: backbone, then the layer norm (if enabled), in one call."""
        return self.norm(embed(self.backbone, x))

    def answer_embedded(self, h: Tensor, c: Tensor, e: Tensor, vote: Optional[Tensor] = None) -> Tensor:
        """One LSTM step per query ``e [B, M, E]`` (of :meth:`embed_inputs`) from the support state ``(h, c) [L, B, H]``.

        ``vote [B, M, n_way]``: the label memory's, read by the head beside the LSTM's output (with ``label_memory``).
        Returns preds ``[B, M, output_dim]``.
        """
        batch, n_query = e.shape[:2]
        steps = torch.cat([e, e.new_zeros(batch, n_query, self.label_dim)], dim=-1).reshape(batch * n_query, 1, -1)
        # every query starts from its own task's state: [L, B, H] -> [L, B*M, H]
        layers, hidden = h.shape[0], h.shape[2]
        h0, c0 = (s.unsqueeze(2).expand(layers, batch, n_query, hidden).flatten(1, 2) for s in (h, c))
        out, _ = self.lstm(steps, (h0.contiguous(), c0.contiguous()))
        features = out[:, -1].reshape(batch, n_query, -1)
        if vote is not None:
            features = torch.cat([features, vote], dim=-1)
        return self.head(features)

    # ---------------------------------------------------------------- the contract
    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """``[B, M, n_way]`` logits or ``[B, M, d_y]`` predictions for ``query_x`` (see class docstring)."""
        self.check_inputs(support_x, support_y)
        check_query(support_x, query_x)
        return self.predict_embedded(self.embed_inputs(support_x), support_y, self.embed_inputs(query_x))

    def predict_embedded(self, support_e: Tensor, support_y: Tensor, query_e: Tensor) -> Tensor:
        """:meth:`forward` from the embeddings of :meth:`embed_inputs`: ``[B, S, E]``, ``[B, M, E]`` -> ``[B, M, output_dim]``."""
        return self.answer_embedded(*self.read_embedded(support_e, support_y), query_e,
                                    self.vote(query_e, support_e, support_y))

    # ---------------------------------------------------------------- the online protocol
    def predict_stream(self, x: Tensor, prev_y: Tensor) -> Tensor:
        """Online protocol (Santoro et al. 2016): logits ``[B, T, n_way]`` for every step of a labelled stream.

        Step ``t`` reads ``[embed(x_t), one_hot(prev_y_t)]`` and predicts ``y_t`` from the LSTM output
        (see :class:`~rnnmeta.learners.online.StreamLearner`).

        Args:
            x: ``[B, T, *x_shape]``.
            prev_y: ``[B, T]`` int64, the labels one step late (:func:`~rnnmeta.data.online.shift_labels`).
        """
        if self.kind != CLASSIFICATION:
            raise ValueError(f"predict_stream is defined for classification learners; this one is {self.kind!r}")
        check_stream_inputs(x, prev_y, self.n_way)
        e, labels_before = self.embed_inputs(x), encode_previous_labels(prev_y, self.n_way)
        out, _ = self.lstm(torch.cat([e, labels_before], dim=-1))
        if self.label_memory is not None:
            out = torch.cat([out, self.label_memory.stream(e, labels_of_steps(labels_before))], dim=-1)
        return self.head(out)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> LSTMPredictor:
        """Read the support set once; the returned predictor holds the LSTM state after it."""
        self.check_inputs(support_x, support_y)
        support_e = self.embed_inputs(support_x)
        h, c = self.read_embedded(support_e, support_y)
        if self.label_memory is None:
            return LSTMPredictor(self, h, c, support_x)
        return LSTMPredictor(self, h, c, support_x, support_e, support_y)
