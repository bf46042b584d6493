"""Out-of-scope ("none of the above") evaluation of few-shot text classifiers.

Larson et al. (2019) evaluate intent classifiers on in-scope queries and on out-of-scope ones
(CLINC150's ``oos_*`` utterances, which belong to no intent): a classifier answers "none of the
above" when its confidence is below a threshold chosen on validation data, and they report
in-scope accuracy and out-of-scope recall. Here the same protocol runs on few-shot episodes:

* an episode is one of the data module's fixed evaluation episodes (``N``-way, ``K``-shot,
  ``N * Q`` in-scope queries) plus ``n_oos`` queries drawn from the out-of-scope pool of the split
  (``oos_val`` for validation episodes, ``oos_test`` for test episodes; a pure function of
  ``(seed, split, episode)``);
* a learner's confidence in a query is its largest softmax probability over the ``N`` classes
  (every learner of the library outputs logits; they answer each query on its own, so adding
  out-of-scope queries changes no in-scope prediction);
* the threshold ``tau`` maximises the accuracy over all validation queries with "out of scope" as
  one more answer (:func:`choose_threshold`); with it, on test episodes, an in-scope query counts as correct when
  it is classified correctly *and* its confidence is ``>= tau``, an out-of-scope query when its
  confidence is ``< tau`` (:func:`oos_metrics`). Means and 95% CIs are over episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor

from rnnmeta.data.module import EpisodicDataModule
from rnnmeta.data.sampling import make_generator
from rnnmeta.evaluation import MeanCI, mean_ci95

__all__ = ["EpisodeScores", "OOSResult", "choose_threshold", "oos_metrics", "score_episodes"]


@dataclass
class EpisodeScores:
    """Per-episode confidences: ``conf_in [E, M]``, ``correct_in [E, M]`` (bool), ``conf_oos [E, n_oos]``."""

    conf_in: Tensor
    correct_in: Tensor
    conf_oos: Tensor


@dataclass
class OOSResult:
    """In-scope accuracy and out-of-scope recall at ``threshold`` (plus the plain accuracy), over test episodes."""

    threshold: float
    in_scope_accuracy: MeanCI
    oos_recall: MeanCI
    accuracy: MeanCI


def score_episodes(
    learner: torch.nn.Module,
    datamodule: EpisodicDataModule,
    oos_ids: Tensor,
    split: Literal["val", "test"],
    n_episodes: int,
    n_oos: int,
    batch_size: int = 25,
) -> EpisodeScores:
    """Run ``learner`` on ``n_episodes`` fixed ``split`` episodes, each with ``n_oos`` out-of-scope queries appended.

    Args:
        learner: any :class:`~rnnmeta.learners.MetaLearner` of the data's ``n_way`` (put in eval mode here).
        datamodule: gives episode ``i`` of ``split`` (:meth:`EpisodicDataModule.eval_episode`); its
            ``val_episodes``/``test_episodes`` must be at least ``n_episodes``.
        oos_ids: ``[P, L]`` token ids of the out-of-scope pool (``L`` as the episodes').
        n_oos: out-of-scope queries per episode (drawn without replacement from the pool).

    Raises:
        ValueError: ``n_oos`` exceeds the pool, or the pool's length differs from the episodes'.
    """
    if not 1 <= n_oos <= oos_ids.shape[0]:
        raise ValueError(f"n_oos must lie in 1..{oos_ids.shape[0]} (the out-of-scope pool), got {n_oos}")
    learner.eval()
    conf_in, correct_in, conf_oos = [], [], []
    for start in range(0, n_episodes, batch_size):
        idx = range(start, min(start + batch_size, n_episodes))
        episodes = [datamodule.eval_episode(split, i) for i in idx]
        extra = [oos_ids[torch.randperm(oos_ids.shape[0], generator=make_generator(datamodule.seed, f"oos_{split}", i))[:n_oos]] for i in idx]
        support_x = torch.cat([e.support_x for e in episodes])
        support_y = torch.cat([e.support_y for e in episodes])
        query_x = torch.cat([e.query_x for e in episodes])
        query_y = torch.cat([e.query_y for e in episodes])
        if tuple(query_x.shape[2:]) != tuple(oos_ids.shape[1:]):  # [L], or [L, 1 + max_ngrams] with subwords
            raise ValueError(
                f"out-of-scope ids have examples {list(oos_ids.shape[1:])} but the episodes' have {list(query_x.shape[2:])} "
                "(max_length and subword settings must match: take both from the same dataset)"
            )
        queries = torch.cat([query_x, torch.stack(extra)], 1)
        with torch.set_grad_enabled(bool(getattr(learner, "needs_grad_at_eval", False))):
            probs = learner(support_x, support_y, queries).detach().softmax(-1)
        conf, pred = probs.max(-1)
        m = query_x.shape[1]
        conf_in.append(conf[:, :m])
        correct_in.append(pred[:, :m] == query_y)
        conf_oos.append(conf[:, m:])
    return EpisodeScores(torch.cat(conf_in).double(), torch.cat(correct_in), torch.cat(conf_oos).double())


def choose_threshold(scores: EpisodeScores) -> float:
    """The confidence threshold that maximises the accuracy over all validation queries, "none of the above" included.

    That is ``(n_in * in-scope accuracy + n_oos * out-of-scope recall) / (n_in + n_oos)``: the
    share of queries answered right by a classifier with an extra "out of scope" answer, on the
    episodes' mix of queries. (The unweighted sum of the two rates rewards rejecting everything as
    soon as the in-scope accuracy is below the recall of that trivial rule.) Candidates are every
    observed confidence and +inf (everything out of scope); ties go to the lowest threshold.
    """
    conf_in, ok = scores.conf_in.flatten(), scores.correct_in.flatten()
    conf_oos = scores.conf_oos.flatten()
    candidates = torch.unique(torch.cat([conf_in, conf_oos, torch.tensor([float("inf")], dtype=torch.float64)]))
    # in-scope accuracy(tau) = mean(ok & conf_in >= tau); recall(tau) = mean(conf_oos < tau)
    in_acc = ((conf_in[None, :] >= candidates[:, None]) & ok[None, :]).double().mean(1)
    recall = (conf_oos[None, :] < candidates[:, None]).double().mean(1)
    n_in, n_oos = conf_in.numel(), conf_oos.numel()
    best = int(torch.argmax((n_in * in_acc + n_oos * recall) / (n_in + n_oos)))
    return float(candidates[best])


def oos_metrics(scores: EpisodeScores, threshold: float) -> OOSResult:
    """Per-episode in-scope accuracy and out-of-scope recall at ``threshold``, as means with 95% CIs."""
    in_acc = ((scores.conf_in >= threshold) & scores.correct_in).double().mean(1)
    recall = (scores.conf_oos < threshold).double().mean(1)
    return OOSResult(threshold, mean_ci95(in_acc), mean_ci95(recall), mean_ci95(scores.correct_in.double().mean(1)))


def summarize(results: Sequence[tuple[str, OOSResult]]) -> str:
    """A markdown table of :class:`OOSResult` rows."""
    lines = [
        "| learner | threshold | in-scope acc | out-of-scope recall | acc without OOS queries |",
        "|---|---|---|---|---|",
    ]
    for name, r in results:
        lines.append(
            f"| {name} | {r.threshold:.3f} | {r.in_scope_accuracy.mean:.4f} +- {r.in_scope_accuracy.ci95:.4f} | "
            f"{r.oos_recall.mean:.4f} +- {r.oos_recall.ci95:.4f} | {r.accuracy.mean:.4f} +- {r.accuracy.ci95:.4f} |"
        )
    return "\n".join(lines)
