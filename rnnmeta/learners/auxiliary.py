"""An auxiliary metric loss for learners that read embedded examples (LSTMLearner, MANN).

A recurrent learner's backbone gets its gradient only through the memory that reads it; early in
training that signal is weak. ProtoNet's loss (Snell et al. 2017) on the same embeddings gives the
backbone a direct metric signal: examples of a class near their prototype. It is added to the query
loss in training only (``metric_loss_weight``); the network, its inputs and its predictions are
those of the learner without it.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from rnnmeta.episode import Episode
from rnnmeta.learners.protonet import prototype_loss

__all__ = ["MetricAuxiliaryLoss"]


class MetricAuxiliaryLoss:
    """Mixin (before :class:`~rnnmeta.learners.base.MetaLearner` in the bases) that adds ``metric_loss_weight`` x
    :func:`~rnnmeta.learners.protonet.prototype_loss` to the training loss.

    The learner provides ``metric_loss_weight`` (a float, checked by
    :func:`~rnnmeta.learners.sequence.check_metric_loss_weight`), :meth:`embed_inputs` and
    :meth:`predict_embedded`; the predictions and the auxiliary loss then share one embedding pass.
    """

    metric_loss_weight: float
    n_way: int

    def embed_inputs(self, x: Tensor) -> Tensor:
        """``[B, T, *x_shape] -> [B, T, E]``: the embeddings the learner's memory reads."""
        raise NotImplementedError

    def predict_embedded(self, support_e: Tensor, support_y: Tensor, query_e: Tensor) -> Tensor:
        """Predictions ``[B, M, output_dim]`` from support embeddings ``[B, S, E]`` and query embeddings ``[B, M, E]``."""
        raise NotImplementedError

    def predict_with_auxiliary_loss(self, batch: Episode) -> tuple[Tensor, Optional[Tensor]]:
        """Query predictions and, with ``metric_loss_weight > 0``, the weighted ProtoNet loss on the same embeddings."""
        if not self.metric_loss_weight:
            return super().predict_with_auxiliary_loss(batch)  # type: ignore[misc]
        support_e, query_e = self.embed_inputs(batch.support_x), self.embed_inputs(batch.query_x)
        preds = self.predict_embedded(support_e, batch.support_y, query_e)
        auxiliary = prototype_loss(support_e, batch.support_y, query_e, batch.query_y, self.n_way)
        return preds, self.metric_loss_weight * auxiliary
