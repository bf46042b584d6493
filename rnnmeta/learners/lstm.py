"""The black-box LSTM meta-learner (Hochreiter et al. 2001; Santoro et al. 2016).

An LSTM reads the support set of a task as a sequence, one labelled example per step, and answers
each query from the state it holds after the last support example:

* support step ``t``: input ``[embed(x_t), label(y_t)]``: the one-hot label (classification), or
  the target followed by a ``1`` flag marking it as given (regression);
* query step: input ``[embed(q), 0]``: the label slot is zero (and the regression flag is ``0``,
  so a zero target and a missing one differ).

Three design choices make the learner leave the chance plateau within a few dozen meta-iterations
(measured on Omniglot, see ``docs/RECURRENT.md``; with nn.LSTM's default initialisation it was still
at chance after 400):

* the embedding is layer-normalised (:class:`torch.nn.LayerNorm`, per example, so queries stay
  independent), so its scale does not depend on the backbone and does not drown the label;
* *key-value initialisation* of the first layer: the input gate and the output gate read the same
  random features of the embedding (``W_o[:, emb] = W_i[:, emb]``, entries ``N(0, key_std^2 / E)``),
  the cell candidate reads only the label (``W_g[:, emb] = 0``, ``W_g[:, label] ~ N(0, 1)``), and the
  forget gate starts open (bias ``forget_bias``). At initialisation the cell after the support set
  is then about ``sum_s sigmoid(W e_s) * tanh(V y_s)`` and a query step outputs about
  ``sigmoid(W e_q + ...) * tanh(c)``, so the linear head already sees ``sum_s k(e_q, e_s) tanh(V y_s)``
  with ``k(q, s) = sum_d sigmoid(w_d q) sigmoid(w_d s)``: a kernel vote over the support labels.
  Training starts with a gradient toward matching queries with support examples; from nn.LSTM's
  default initialisation the write (input gate) and read (output/forget gate) features are
  unrelated and that gradient is nearly zero (a saddle every unit must leave at once).
* *label readout* (classification): the head's row for class ``j`` starts as the cell direction
  that label ``j`` writes (``tanh(W_g[:, label j])``, scaled by ``readout_init``). With a random
  head the learner stayed at chance on 20-way 1-shot Omniglot; with the tied head it learns
  (:func:`label_readout_init_`, ``scripts/ablation_recurrent.py``).

:meth:`LSTMLearner.predict_stream` runs the same network on the online protocol of Santoro et al.
(labels one step late; see :mod:`rnnmeta.learners.online`).

Queries are answered independently and in one batched pass: the support sequence runs once, its
final ``(h, c)`` is expanded over the ``M`` queries, and one LSTM step is taken for all ``B * M``
queries at once, followed by a linear head to ``output_dim``. No query's input reaches another's
state, and no query label is ever read (``forward`` is not given any).

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
from rnnmeta.learners.online import check_stream_inputs, encode_previous_labels
from rnnmeta.learners.sequence import check_positive, check_query, embed, encode_labels, label_width
from rnnmeta.learners.sequence import key_value_init_, label_readout_init_
from rnnmeta.nets import backbone_features, resolve_backbone

__all__ = ["LSTMLearner", "LSTMPredictor", "key_value_init_", "label_readout_init_"]


# --------------------------------------------------------------------------- the learner
class LSTMPredictor:
    """The state of an :class:`LSTMLearner` after a support set: answers ``query_x [B, M, *x]``."""

    def __init__(self, learner: "LSTMLearner", h: Tensor, c: Tensor, support_x: Tensor) -> None:
        self.learner, self.h, self.c = learner, h, c
        self.support_x = support_x[:, :0]  # shape reference for checking queries; holds no data

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(self.support_x, query_x)
        return self.learner.answer(self.h, self.c, query_x)


class LSTMLearner(MetaLearner):
    """An LSTM over the support set; each query answered from the state after it (see module docstring).

    Args:
        backbone: embedding of one input ``[*x_shape] -> [E]`` with an ``out_features`` attribute;
            ``None`` gives :func:`rnnmeta.nets.default_backbone` of ``kind`` (Conv4 with running statistics, or the sinusoid MLP).
        hidden_size: LSTM units per layer.
        num_layers: stacked LSTM layers.
        embedding_norm: layer-normalise the embedding before the LSTM (see the module docstring).
        key_value_init: key-value initialisation of the first LSTM layer (see the module docstring);
            ``False`` keeps nn.LSTM's default initialisation.
        key_std: scale of the shared input/output-gate embedding weights of that initialisation.
        forget_bias: initial forget-gate bias of that initialisation.
        input_bias: initial input-gate bias of that initialisation (``None``: nn.LSTM's random bias).
        readout_init: classification with ``key_value_init`` and one layer: the head starts reading
            the cell direction of each label, scaled by this (:func:`label_readout_init_`); ``0``
            keeps nn.Linear's random head. Regression, and a stack of layers (whose head reads the
            top layer, not the one the labels are written into), keep the random head.
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
        key_std: float = 2.0,
        forget_bias: float = 3.0,
        input_bias: Optional[float] = None,
        readout_init: float = 0.3,
        embedding_dim: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_positive(hidden_size=hidden_size, num_layers=num_layers)
        self.backbone = resolve_backbone(backbone, self.kind, track_running_stats=True)
        self.embed_dim = backbone_features(self.backbone, embedding_dim)
        self.label_dim = label_width(self.kind, self.n_way, self.target_dim)
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.norm = nn.LayerNorm(self.embed_dim) if embedding_norm else nn.Identity()
        self.lstm = nn.LSTM(self.embed_dim + self.label_dim, hidden_size, num_layers=num_layers, batch_first=True)
        if key_value_init:
            key_value_init_(self.lstm, self.embed_dim, self.label_dim, key_std, forget_bias, input_bias)
        self.head = nn.Linear(hidden_size, self.output_dim)
        if key_value_init and readout_init and self.kind == CLASSIFICATION and num_layers == 1:
            label_readout_init_(self.head, self.lstm, self.embed_dim, self.label_dim, readout_init)

    # ---------------------------------------------------------------- the two phases
    def read_support(self, support_x: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """Run the LSTM over the support sequence: final ``(h, c)``, each ``[num_layers, B, H]``."""
        steps = torch.cat([self.embed_inputs(support_x), encode_labels(support_y, self.kind, self.n_way)], dim=-1)
        _, (h, c) = self.lstm(steps)
        return h, c

    def embed_inputs(self, x: Tensor) -> Tensor:
        """``[B, T, *x_shape] -> [B, T, E]``: backbone, then the layer norm (if enabled), in one call."""
        return self.norm(embed(self.backbone, x))

    def answer(self, h: Tensor, c: Tensor, query_x: Tensor) -> Tensor:
        """One LSTM step per query from the support state ``(h, c) [L, B, H]``: preds ``[B, M, output_dim]``."""
        batch, n_query = query_x.shape[:2]
        e = self.embed_inputs(query_x)  # [B, M, E]
        steps = torch.cat([e, e.new_zeros(batch, n_query, self.label_dim)], dim=-1).reshape(batch * n_query, 1, -1)
        # every query starts from its own task's state: [L, B, H] -> [L, B*M, H]
        layers, hidden = h.shape[0], h.shape[2]
        h0 = h.unsqueeze(2).expand(layers, batch, n_query, hidden).reshape(layers, batch * n_query, hidden)
        c0 = c.unsqueeze(2).expand(layers, batch, n_query, hidden).reshape(layers, batch * n_query, hidden)
        out, _ = self.lstm(steps, (h0.contiguous(), c0.contiguous()))
        return self.head(out[:, -1]).reshape(batch, n_query, self.output_dim)

    # ---------------------------------------------------------------- the contract
    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """``[B, M, n_way]`` logits or ``[B, M, d_y]`` predictions for ``query_x`` (see class docstring)."""
        self.check_inputs(support_x, support_y)
        check_query(support_x, query_x)
        h, c = self.read_support(support_x, support_y)
        return self.answer(h, c, query_x)

    # ---------------------------------------------------------------- the online protocol
    def predict_stream(self, x: Tensor, prev_y: Tensor) -> Tensor:
        """Online protocol (Santoro et al. 2016): logits for every step of a labelled stream.

        Step ``t`` reads ``[embed(x_t), one_hot(prev_y_t)]`` (an all-zero label slot where
        ``prev_y_t`` is :data:`~rnnmeta.data.online.NO_LABEL`) and predicts ``y_t`` from the LSTM
        output, so a prediction depends on ``x_0..x_t`` and ``y_0..y_{t-1}`` only.

        Args:
            x: ``[B, T, *x_shape]``.
            prev_y: ``[B, T]`` int64, the labels shifted one step late (see
                :func:`~rnnmeta.data.online.shift_labels`).

        Returns:
            ``[B, T, n_way]`` logits.
        """
        if self.kind != CLASSIFICATION:
            raise ValueError(f"predict_stream is defined for classification learners; this one is {self.kind!r}")
        check_stream_inputs(x, prev_y, self.n_way)
        steps = torch.cat([self.embed_inputs(x), encode_previous_labels(prev_y, self.n_way)], dim=-1)
        out, _ = self.lstm(steps)
        return self.head(out)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> LSTMPredictor:
        """Read the support set once; the returned predictor holds the LSTM state after it."""
        self.check_inputs(support_x, support_y)
        h, c = self.read_support(support_x, support_y)
        return LSTMPredictor(self, h, c, support_x)
