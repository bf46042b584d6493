"""Episodes as the data layer makes them: the contract every learner relies on."""

from __future__ import annotations

import pytest
import torch

from rnnmeta.data import EpisodicDataModule, Omniglot
from rnnmeta.episode import CLASSIFICATION, Episode


@pytest.mark.parametrize("n_way,k_shot", [(5, 1), (20, 5)])
def test_omniglot_episode_contract(omniglot: Omniglot, n_way: int, k_shot: int) -> None:
    ep = omniglot.split("train").sample(torch.Generator().manual_seed(0), 4, n_way, k_shot, 15)
    assert isinstance(ep, Episode) and ep.kind == CLASSIFICATION and ep.n_way == n_way
    assert ep.support_x.shape == (4, n_way * k_shot, 1, 28, 28)
    assert ep.query_x.shape == (4, n_way * 15, 1, 28, 28)
    assert ep.support_y.dtype == ep.query_y.dtype == torch.int64
    assert ep.support_x.dtype == ep.query_x.dtype == torch.float32
    assert 0.0 <= float(ep.support_x.min()) and float(ep.query_x.max()) <= 1.0
    assert ep.k_shot == k_shot and ep.x_shape == (1, 28, 28)
    ep.validate()


def test_eval_batches_are_collated_single_episodes(omniglot: Omniglot) -> None:
    dm = EpisodicDataModule(omniglot, n_way=5, k_shot=1, q_queries=3, val_episodes=5, eval_batch_size=5)
    batch = next(iter(dm.val_dataloader()))
    singles = Episode.collate([dm.eval_episode("val", i) for i in range(5)])
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(batch, name), getattr(singles, name))
    assert torch.equal(batch.task(2).support_x, dm.eval_episode("val", 2).support_x)


def test_episode_moves_and_keeps_labels(omniglot: Omniglot) -> None:
    ep = omniglot.split("val").sample(torch.Generator().manual_seed(0), 2, 5, 1, 1)
    half = ep.to(torch.float64)
    assert half.support_x.dtype == torch.float64 and half.support_y.dtype == torch.int64
    assert ep.support_x.dtype == torch.float32  # a new episode, the old one unchanged
    # where nothing moves (a CPU episode to the CPU, every training step without an accelerator) it is the same object
    assert ep.to("cpu") is ep and ep.to(torch.device("cpu"), non_blocking=True) is ep


def test_episode_rejects_mismatched_data() -> None:
    with pytest.raises(ValueError, match="query_x"):
        Episode(torch.zeros(2, 5, 1, 4, 4), torch.zeros(2, 5, dtype=torch.int64), torch.zeros(3, 5, 1, 4, 4),
                torch.zeros(3, 5, dtype=torch.int64), n_way=5)
