"""Sinusoid regression tasks (Finn et al. 2017): shapes, ranges, consistency, seeding and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from rnnmeta.data import EpisodicDataModule, Sinusoid
from rnnmeta.episode import REGRESSION


def test_shapes_and_kind() -> None:
    ds = Sinusoid()
    assert ds.kind == REGRESSION and ds.x_shape == (1,)
    ep = ds.split("train").sample(torch.Generator().manual_seed(0), 25, 5, 10, 7)
    assert ep.kind == REGRESSION and ep.n_way == 0
    assert ep.support_x.shape == (25, 10, 1) and ep.support_y.shape == (25, 10, 1)
    assert ep.query_x.shape == (25, 7, 1) and ep.query_y.shape == (25, 7, 1)
    assert ep.support_x.dtype == ep.support_y.dtype == torch.float32


def test_ranges_and_function() -> None:
    src = Sinusoid().split("test")
    ep, amp, phase = src.sample_with_params(torch.Generator().manual_seed(1), 2000, 10, 10)
    assert float(amp.min()) >= 0.1 and float(amp.max()) <= 5.0 and float(amp.max()) > 4.9
    assert float(phase.min()) >= 0.0 and float(phase.max()) <= math.pi
    for x in (ep.support_x, ep.query_x):
        assert float(x.min()) >= -5.0 and float(x.max()) <= 5.0
    for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
        expected = amp[:, None, None] * torch.sin(x - phase[:, None, None])
        assert torch.allclose(y, expected)
    assert float(ep.support_y.abs().max()) <= 5.0


def test_custom_ranges() -> None:
    src = Sinusoid(amplitude=(1.0, 1.0), phase=(0.0, 0.0), x_range=(0.0, 1.0)).split("val")
    ep = src.sample(torch.Generator().manual_seed(0), 4, 0, 5, 5)
    assert torch.allclose(ep.support_y, torch.sin(ep.support_x))
    assert float(ep.query_x.min()) >= 0.0 and float(ep.query_x.max()) <= 1.0


def test_n_way_ignored_and_seeded() -> None:
    src = Sinusoid().split("train")
    a = src.sample(torch.Generator().manual_seed(3), 4, 5, 5, 5)
    b = src.sample(torch.Generator().manual_seed(3), 4, 20, 5, 5)
    assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_x, b.query_x)


def test_data_module_regression_streams() -> None:
    dm = EpisodicDataModule(Sinusoid(), k_shot=5, k_shot_max=10, q_queries=10, meta_batch_size=25, train_batches_per_epoch=4,
                            val_episodes=7, test_episodes=7, eval_batch_size=4)
    dm.setup()
    assert dm.kind == REGRESSION and dm.x_shape == (1,)
    ks = {b.support_x.shape[1] for b in dm.train_dataloader()}
    assert ks <= set(range(5, 11))
    val = list(dm.val_dataloader())
    assert [b.batch_size for b in val] == [4, 3] and val[0].support_x.shape[1] == 5
    test0 = dm.eval_episode("test", 0)
    assert not torch.equal(test0.support_x, dm.eval_episode("val", 0).support_x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"amplitude": (5.0, 0.1)}, r"amplitude.*\(5\.0, 0\.1\)"),
        ({"amplitude": (-1.0, 1.0)}, r"amplitude.*-1\.0"),
        ({"phase": (1.0, 0.0)}, r"phase.*\(1\.0, 0\.0\)"),
        ({"x_range": (2.0, 2.0)}, r"x_range.*\(2\.0, 2\.0\)"),
        ({"x_range": ("a", "b")}, r"x_range.*'a'"),
    ],
)
def test_bad_ranges(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sinusoid(**kwargs)


def test_bad_sizes_and_split() -> None:
    src = Sinusoid().split("train")
    with pytest.raises(ValueError, match="k_shot must be an integer >= 1, got 0"):
        src.sample(torch.Generator(), 2, 0, 0, 5)
    with pytest.raises(ValueError, match="'train2'"):
        Sinusoid().split("train2")
