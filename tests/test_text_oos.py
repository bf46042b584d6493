"""The out-of-scope evaluation: threshold choice, metrics, episodes with oos queries appended."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rnnmeta.oos import EpisodeScores, choose_threshold, oos_metrics, score_episodes

CLINC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "clinc150"


def test_threshold_maximises_accuracy_with_none_of_the_above() -> None:
    scores = EpisodeScores(
        conf_in=torch.tensor([[0.9, 0.8, 0.4]], dtype=torch.float64),
        correct_in=torch.tensor([[True, True, False]]),
        conf_oos=torch.tensor([[0.3, 0.5]], dtype=torch.float64),
    )
    # tau = 0.8: both correct in-scope answers kept, both oos rejected -> 4 of 5 queries right
    assert choose_threshold(scores) == pytest.approx(0.8)
    r = oos_metrics(scores, 0.8)
    assert r.in_scope_accuracy.mean == pytest.approx(2 / 3) and r.oos_recall.mean == 1.0 and r.accuracy.mean == pytest.approx(2 / 3)
    r = oos_metrics(scores, 0.5)  # 0.5 itself is accepted (>= tau): one oos query missed
    assert r.oos_recall.mean == 0.5 and r.in_scope_accuracy.mean == pytest.approx(2 / 3)
    # nothing separates: rejecting everything (tau = inf) is never preferred to a tie at a finite value
    flat = EpisodeScores(torch.full((2, 4), 0.5, dtype=torch.float64), torch.ones(2, 4, dtype=torch.bool),
                         torch.full((2, 1), 0.5, dtype=torch.float64))
    assert choose_threshold(flat) == 0.5


def test_oos_queries_leave_in_scope_answers_unchanged_on_clinc150() -> None:
    from rnnmeta.data import CLINC150, EpisodicDataModule
    from rnnmeta.learners import TfidfCentroid

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    ds = CLINC150(str(CLINC_DIR))
    dm = EpisodicDataModule(ds, n_way=5, k_shot=1, q_queries=3, val_episodes=6, test_episodes=6)
    learner = TfidfCentroid(n_way=5)
    scores = score_episodes(learner, dm, ds.oos_ids("oos_test"), "test", n_episodes=6, n_oos=4, batch_size=4)
    assert scores.conf_in.shape == (6, 15) and scores.conf_oos.shape == (6, 4)
    assert bool(((scores.conf_in >= 0.2 - 1e-9) & (scores.conf_in <= 1)).all())
    for i in range(6):
        ep = dm.eval_episode("test", i)
        alone = learner(ep.support_x, ep.support_y, ep.query_x).softmax(-1)
        torch.testing.assert_close(alone.max(-1).values[0].double(), scores.conf_in[i])
        assert torch.equal(alone.argmax(-1)[0] == ep.query_y[0], scores.correct_in[i])
    again = score_episodes(learner, dm, ds.oos_ids("oos_test"), "test", n_episodes=6, n_oos=4)
    assert torch.equal(again.conf_oos, scores.conf_oos)  # the oos queries are a function of (seed, split, episode)
    with pytest.raises(ValueError, match="n_oos must lie in 1..100"):
        score_episodes(learner, dm, ds.oos_ids("oos_val"), "val", n_episodes=2, n_oos=101)


def test_oos_scores_on_subword_ids_are_tfidfs_word_scores() -> None:
    from rnnmeta.data import CLINC150, EpisodicDataModule
    from rnnmeta.learners import TfidfCentroid

    if not (CLINC_DIR / "data_full.json").exists():
        pytest.skip(f"CLINC150 not found at {CLINC_DIR}")
    words, sub = CLINC150(str(CLINC_DIR)), CLINC150(str(CLINC_DIR), subword_buckets=1000, max_ngrams=8)
    learner = TfidfCentroid(n_way=5)
    scores = []
    for ds in (words, sub):
        dm = EpisodicDataModule(ds, n_way=5, k_shot=1, q_queries=3, val_episodes=4, test_episodes=4)
        scores.append(score_episodes(learner, dm, ds.oos_ids("oos_test"), "test", n_episodes=4, n_oos=4))
    assert sub.oos_ids("oos_test").shape == (1000, 32, 9)
    assert torch.equal(scores[0].conf_in, scores[1].conf_in) and torch.equal(scores[0].conf_oos, scores[1].conf_oos)
    with pytest.raises(ValueError, match=r"out-of-scope ids have examples \[32\] but the episodes' have \[32, 9\]"):
        score_episodes(learner, dm, words.oos_ids("oos_test"), "test", n_episodes=2, n_oos=4)
