"""Prototypical networks (Snell, Swersky & Zemel 2017): the metric baseline behind the learner contract.

A backbone ``f`` embeds every example; the prototype of class ``n`` of a task is the mean
embedding of its support examples, and a query's logits are the negative squared Euclidean
distances to the prototypes::

    c_n = 1/|S_n| sum_{(x, y) in S, y = n} f(x)                    (eq. 1)
    logits_n(q) = -||f(q) - c_n||^2                               (eq. 2, softmax over n)

Nothing is adapted per task but the prototypes, so :meth:`ProtoNet.adapt` returns a
:class:`ProtoNetPredictor` that holds them (``[B, N, E]``) and embeds new queries only.

Queries are answered independently in evaluation mode (the default Conv4 keeps running
statistics); in training :meth:`ProtoNet.forward` embeds support and queries in one backbone call,
so batch norm normalises them together, as the authors' code does. Classification only.

Reference:
    J. Snell, K. Swersky, R. Zemel. "Prototypical Networks for Few-shot Learning". NeurIPS 2017.
    https://arxiv.org/abs/1703.05175 (Omniglot: Conv4 with 64 filters, Adam 1e-3 halved every
    2,000 episodes, 60-way training episodes with 5 queries per class; 98.8 / 99.7 / 96.0 / 98.9 %
    on 5w1s / 5w5s / 20w1s / 20w5s).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.episode import CLASSIFICATION
from rnnmeta.learners.sequence import check_query, embed
from rnnmeta.learners.base import MetaLearner
from rnnmeta.nets import backbone_features, batch_norm_layers, resolve_backbone

__all__ = ["ProtoNet", "ProtoNetPredictor", "class_prototypes", "prototype_loss", "squared_euclidean_logits"]


def class_prototypes(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Class means of the support embeddings (Snell et al. 2017, eq. 1).

    Args:
        embeddings: ``[B, S, E]`` support embeddings.
        labels: ``[B, S]`` int64 labels in ``0..n_way-1``.
        n_way: number of classes ``N``.

    Returns:
        ``[B, N, E]`` prototypes.

    Raises:
        ValueError: a task has no support example of some class (its prototype is undefined).
    """
    one_hot = F.one_hot(labels, n_way).to(embeddings.dtype)  # [B, S, N]
    counts = one_hot.sum(1)  # [B, N]
    if bool((counts == 0).any()):
        task, cls = (counts == 0).nonzero()[0].tolist()
        raise ValueError(
            f"support_y of task {task} has no example of class {cls} (expected every class 0..{n_way - 1} at least "
            "once): a prototype is the mean of a class's support embeddings"
        )
    return one_hot.transpose(1, 2) @ embeddings / counts.unsqueeze(-1)


def squared_euclidean_logits(queries: Tensor, prototypes: Tensor) -> Tensor:
    """``-||q - c_n||^2`` for every query and prototype (Snell et al. 2017, eq. 2).

    Args:
        queries: ``[B, M, E]``.
        prototypes: ``[B, N, E]``.

    Returns:
        ``[B, M, N]`` logits. Computed as the sum of squared differences (not the expanded
        ``|q|^2 - 2 q.c + |c|^2``, which cancels catastrophically for nearby points).
    """
    return -(queries.unsqueeze(2) - prototypes.unsqueeze(1)).pow(2).sum(-1)


def prototype_loss(support_e: Tensor, support_y: Tensor, query_e: Tensor, query_y: Tensor, n_way: int) -> Tensor:
    """ProtoNet's loss on given embeddings: mean cross-entropy of the logits of eq. 2 against ``query_y``.

    The sequence learners add it, weighted, to their own query loss (``metric_loss_weight``) so that
    their backbone gets the metric signal that ProtoNet learns from.

    Args:
        support_e: ``[B, S, E]`` support embeddings.
        support_y: ``[B, S]`` int64 labels.
        query_e: ``[B, M, E]`` query embeddings.
        query_y: ``[B, M]`` int64 labels.
        n_way: number of classes ``N``.

    Returns:
        A scalar.
    """
    logits = squared_euclidean_logits(query_e, class_prototypes(support_e, support_y, n_way))
    return F.cross_entropy(logits.flatten(0, 1), query_y.flatten())


class ProtoNetPredictor:
    """The prototypes of adapted tasks: answers ``query_x [B, M, *x] -> [B, M, n_way]`` logits."""

    def __init__(self, learner: "ProtoNet", prototypes: Tensor, x_shape: tuple[int, ...]) -> None:
        self.learner, self.prototypes, self.x_shape = learner, prototypes, x_shape

    def __call__(self, query_x: Tensor) -> Tensor:
        check_query(torch.empty(self.prototypes.shape[0], 0, *self.x_shape), query_x)  # an empty shape reference
        return squared_euclidean_logits(self.learner.embed(query_x), self.prototypes)


class ProtoNet(MetaLearner):
    """Prototypical network (Snell et al. 2017); see the module docstring.

    Args:
        backbone: embedding of one input ``[*x_shape] -> [E]``; ``None`` gives
            :func:`rnnmeta.nets.default_backbone` (Conv4, 64 filters, batch norm with running
            statistics: 64-d embeddings of 28x28 Omniglot), as in the paper.
        embedding_dim: ``E``, needed only when ``backbone`` has no ``out_features`` attribute.
        **kwargs: kind, n_way, target_dim, optimizer, lr_scheduler: see :class:`~rnnmeta.learners.base.MetaLearner`;
            ``kind`` must be ``"classification"``. The shipped configs set the paper's schedule
            (``StepLR`` halving the lr every 2,000 episodes).

    Shapes:
        ``forward(support_x [B, S, *x], support_y [B, S], query_x [B, M, *x]) -> [B, M, n_way]``.

    Example:
        >>> learner = ProtoNet(n_way=5)
        >>> predict = learner.eval().adapt(support_x, support_y)   # the prototypes [B, 5, 64]
        >>> logits = predict(query_x)
    """

    def __init__(
        self,
        backbone: Optional[nn.Module] = None,
        embedding_dim: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.kind != CLASSIFICATION:
            raise ValueError(
                f"ProtoNet is a classification learner (prototypes are class means), got kind={self.kind!r}; "
                "use MAML, SNAIL, LSTMLearner or MANN for regression"
            )
        self.backbone = resolve_backbone(backbone, self.kind, track_running_stats=True)
        self.embed_dim = backbone_features(self.backbone, embedding_dim)

    @property
    def transductive(self) -> bool:
        """True when a backbone batch norm uses batch statistics in ``eval()`` (not so in the default Conv4)."""
        return any(not m.track_running_stats for m in batch_norm_layers(self.backbone))

    def embed(self, x: Tensor) -> Tensor:
        """``[B, T, *x_shape] -> [B, T, E]`` in one backbone call."""
        return embed(self.backbone, x)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """``[B, M, n_way]`` logits: minus squared distances to the support prototypes (see class docstring)."""
        self.check_inputs(support_x, support_y, query_x)
        n_support = support_x.shape[1]
        e = self.embed(torch.cat([support_x, query_x], dim=1))  # one call: batch norm sees both in training
        prototypes = class_prototypes(e[:, :n_support], support_y, self.n_way)
        return squared_euclidean_logits(e[:, n_support:], prototypes)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> ProtoNetPredictor:
        """Embed the support set once; the predictor holds the prototypes ``[B, n_way, E]``."""
        self.check_inputs(support_x, support_y)
        prototypes = class_prototypes(self.embed(support_x), support_y, self.n_way)
        return ProtoNetPredictor(self, prototypes, tuple(support_x.shape[2:]))
