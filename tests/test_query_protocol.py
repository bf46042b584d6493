"""Answering each query on its own: batch norm from the support set, and evaluation episodes shared across protocols."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnmeta.data import EpisodicDataModule, Sinusoid
from rnnmeta.learners import LearnedOptimizer
from rnnmeta.nets import Conv4, reference_batch_norm


def test_reference_batch_norm_normalises_every_row_with_the_reference_rows_statistics():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, track_running_stats=False).double()
    nn.init.normal_(bn.weight)
    nn.init.normal_(bn.bias)
    ref, rest = torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.randn(6, 3, 5, 5, dtype=torch.float64) * 3 + 1
    with reference_batch_norm(bn, 4):
        out = bn(torch.cat([ref, rest]))
    # the reference rows come out as ordinary batch norm over themselves ...
    assert torch.allclose(out[:4], bn(ref), atol=1e-12)
    # ... and every other row is normalised with the reference's mean and biased variance, alone
    mean, var = ref.mean((0, 2, 3)), ref.var((0, 2, 3), unbiased=False)
    expected = F.batch_norm(rest, mean, var, bn.weight, bn.bias, training=False, eps=bn.eps)
    assert torch.allclose(out[4:], expected, atol=1e-12)
    assert torch.allclose(out[5:6], _one_row(bn, ref, rest[1:2]), atol=1e-12)
    # outside the block the layer is ordinary batch norm again
    assert torch.allclose(bn(rest), F.batch_norm(rest, None, None, bn.weight, bn.bias, training=True, eps=bn.eps))


def _one_row(bn, ref, row):
    with reference_batch_norm(bn, ref.shape[0]):
        return bn(torch.cat([ref, row]))[ref.shape[0]:]


def test_reference_batch_norm_refuses_running_statistics_and_bad_sizes():
    with pytest.raises(ValueError, match="without running statistics"):
        with reference_batch_norm(nn.BatchNorm2d(3), 2):
            pass
    with pytest.raises(ValueError, match="n_reference must be an int >= 1, got 0"):
        with reference_batch_norm(nn.BatchNorm2d(3, track_running_stats=False), 0):
            pass
    bn = nn.BatchNorm2d(3, track_running_stats=False)
    with pytest.raises(ValueError, match="input has 2 rows, expected the 2 reference rows"):
        with reference_batch_norm(bn, 2):
            bn(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("query_bn, independent", [("transductive", False), ("support", True)])
def test_learned_optimizer_query_bn_decides_query_independence(query_bn, independent):
    torch.manual_seed(0)
    learner = LearnedOptimizer(n_way=3, backbone=Conv4(1, 4, 16), inner_steps=2, query_bn=query_bn).double().eval()
    sx = torch.rand(2, 6, 1, 16, 16, dtype=torch.float64)
    sy = torch.arange(3).repeat_interleave(2).repeat(2, 1)
    qx = torch.rand(2, 5, 1, 16, 16, dtype=torch.float64)
    other = qx.clone()
    other[:, 1:] = torch.rand_like(other[:, 1:])
    first = learner(sx, sy, qx)[:, 0]
    assert torch.allclose(first, learner(sx, sy, other)[:, 0], atol=1e-12) is independent
    assert learner.transductive is not independent
    # in training the support-normalised query pass carries the meta-gradient
    learner.train()
    learner(sx, sy, qx).sum().backward()
    assert learner.head.weight.grad.abs().sum() > 0


def test_learners_training_with_other_queries_share_the_evaluation_episodes():
    common = dict(k_shot=5, eval_k_shot=5, eval_q_queries=10, val_episodes=4, test_episodes=6, seed=3)
    a = EpisodicDataModule(Sinusoid(), q_queries=10, meta_batch_size=4, **common)
    b = EpisodicDataModule(Sinusoid(), q_queries=1, meta_batch_size=32, k_shot_max=7, **{**common, "k_shot": 2})
    for split in ("val", "test"):
        for i in range(3):
            ea, eb = a.eval_episode(split, i), b.eval_episode(split, i)
            assert ea.query_x.shape == (1, 10, 1) and torch.equal(ea.query_x, eb.query_x)
            assert torch.equal(ea.support_y, eb.support_y)
    assert a.train_batch(0).query_x.shape[:2] == (4, 10)
    assert b.train_batch(0).query_x.shape[:2] == (32, 1)
    with pytest.raises(ValueError, match="eval_q_queries must be >= 1, got 0"):
        EpisodicDataModule(Sinusoid(), eval_q_queries=0)
