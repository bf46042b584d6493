"""TF-IDF nearest class centroid: the training-free floor of every text table.

For each task, independently and without any meta-training (Salton & Buckley 1988 weighting;
the nearest-centroid rule of Rocchio / Snell et al. 2017 on fixed features):

1. the task's vocabulary is the set of token ids in its support set (padding, and ``<unk>``
   unless ``use_unk``, excluded); a query token outside it is ignored, as in scikit-learn's
   ``TfidfVectorizer`` fitted on the support set;
2. ``tf[d, v]`` counts token ``v`` in text ``d`` (``sublinear_tf``: ``1 + log tf``);
   ``idf[v] = log((1 + S) / (1 + df[v])) + 1`` with ``df[v]`` the support texts containing ``v``
   (scikit-learn's smoothed idf); every text's ``tf * idf`` vector is L2-normalised;
3. a class centroid is the mean of its support vectors; a query's logit for class ``n`` is
   ``scale * cos(query, centroid_n)``.

It reads the same token ids as the learners (the vocabulary of the meta-training classes: a
test-class word outside it is ``<unk>`` for every row of a table). It has no parameters; in a
comparison it runs with ``max_steps: 0``. Queries are answered independently. On ids with character
n-grams (``[B, S, L, 1 + max_ngrams]``, data with ``subword_buckets > 0``) it reads channel 0, the
word ids, so its numbers are the same with or without subwords (the floor stays word TF-IDF). ``scale`` only
sharpens the softmax (a confidence for the out-of-scope evaluation), never the argmax.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnmeta.learners.base import MetaLearner

__all__ = ["TfidfCentroid", "tfidf_vectors"]

_PAD, _UNK = 0, 1


def _term_counts(ids: Tensor, n_terms: int, use_unk: bool) -> Tensor:
    """``ids [B, n, L]`` -> term counts ``[B, n, n_terms]`` (padding, and ``<unk>`` unless ``use_unk``, dropped)."""
    counts = torch.zeros(*ids.shape[:-1], n_terms, dtype=torch.float64)
    counts.scatter_add_(-1, ids, torch.ones_like(ids, dtype=torch.float64))
    counts[..., _PAD] = 0
    if not use_unk:
        counts[..., _UNK] = 0
    return counts


def tfidf_vectors(support_x: Tensor, query_x: Tensor, use_unk: bool = False, sublinear_tf: bool = False) -> tuple[Tensor, Tensor]:
    """L2-normalised TF-IDF vectors of support and query texts with idf from each task's support set.

    Args:
        support_x: ``[B, S, L]`` token ids (padding 0).
        query_x: ``[B, M, L]`` token ids.
        use_unk: count ``<unk>`` (id 1) as a term.
        sublinear_tf: ``1 + log(tf)`` instead of raw counts.

    Returns:
        ``([B, S, V], [B, M, V])`` float64, ``V = max id + 1``; terms absent from a task's support set are 0.
    """
    n_terms = int(max(int(support_x.max()), int(query_x.max()), _UNK)) + 1
    s_tf = _term_counts(support_x, n_terms, use_unk)
    q_tf = _term_counts(query_x, n_terms, use_unk)
    df = (s_tf > 0).sum(1, keepdim=True).to(torch.float64)  # [B, 1, V]
    in_support = df > 0
    n_docs = support_x.shape[1]
    idf = torch.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    if sublinear_tf:
        s_tf = torch.where(s_tf > 0, 1.0 + torch.log(s_tf.clamp_min(1.0)), s_tf)
        q_tf = torch.where(q_tf > 0, 1.0 + torch.log(q_tf.clamp_min(1.0)), q_tf)
    s_vec = F.normalize(s_tf * idf, dim=-1)
    q_vec = F.normalize(q_tf * idf * in_support, dim=-1)
    return s_vec, q_vec


class TfidfCentroid(MetaLearner):
    """Nearest class centroid on TF-IDF features of each task's support set (no meta-training).

    Args:
        n_way: classes per task.
        scale: logits are ``scale * cosine similarity`` (softmax sharpness; accuracy does not depend on it).
        use_unk: count the ``<unk>`` token as a term (off: an unknown word is no evidence of a class).
        sublinear_tf: ``1 + log(tf)`` term frequencies.

    Shapes:
        ``support_x [B, S, L]`` int token ids, ``support_y [B, S]``, ``query_x [B, M, L]`` -> ``[B, M, n_way]`` logits;
        ids ``[B, S, L, 1 + G]`` with n-gram buckets are read as their word ids (channel 0).
    """

    def __init__(
        self,
        n_way: int = 5,
        scale: float = 10.0,
        use_unk: bool = False,
        sublinear_tf: bool = False,
        kind: Literal["classification"] = "classification",
    ) -> None:
        super().__init__(kind=kind, n_way=n_way)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"TfidfCentroid scale must be a number > 0, got {scale!r}")
        self.scale = float(scale)
        self.use_unk = bool(use_unk)
        self.sublinear_tf = bool(sublinear_tf)
        self.save_hyperparameters()

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        self.check_inputs(support_x, support_y, query_x)
        if support_x.is_floating_point() or query_x.is_floating_point():
            raise TypeError(f"TfidfCentroid reads integer token ids, got {support_x.dtype} / {query_x.dtype}")
        if support_x.dim() == 4 and query_x.dim() == 4:  # word ids and n-gram buckets: word TF-IDF on channel 0
            support_x, query_x = support_x[..., 0], query_x[..., 0]
        if support_x.dim() != 3 or query_x.dim() != 3:
            raise ValueError(
                f"TfidfCentroid expects token ids support_x [B, S, L] and query_x [B, M, L] (or [B, S, L, 1 + G] "
                f"with subwords), got "
                f"{list(support_x.shape)} and {list(query_x.shape)}"
            )
        s_vec, q_vec = tfidf_vectors(support_x, query_x, self.use_unk, self.sublinear_tf)
        one_hot = F.one_hot(support_y, self.n_way).to(s_vec.dtype)  # [B, S, N]
        centroids = F.normalize(one_hot.transpose(1, 2) @ s_vec, dim=-1)  # [B, N, V]; mean direction
        logits = self.scale * (q_vec @ centroids.transpose(1, 2))  # [B, M, N]
        return logits.to(torch.get_default_dtype())

    def training_step(self, batch: Any, batch_idx: int) -> None:
        raise RuntimeError("TfidfCentroid has nothing to train: run it with max_steps: 0 (trainer.fit is a no-op)")

    def configure_optimizers(self) -> None:
        """No parameters, no optimiser."""
        return None
