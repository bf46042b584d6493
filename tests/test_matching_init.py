"""matching_init: the LSTM learner's first layer and head start as a dot-product matcher (docs/RECURRENT.md)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnmeta.learners.lstm import LSTMLearner
from rnnmeta.learners.mann import MANN
from rnnmeta.learners.sequence import matching_init_
from rnnmeta.nets import MLP

from helpers import assert_queries_answered_independently, flat_task

WRITE_LOGIT, FORGET_BIAS = 6.0, 6.0  # matching_init_'s defaults, as LSTMLearner uses them


def matcher(n_way: int = 3, pairs: int = 4, extra: int = 0, **kw) -> LSTMLearner:
    """An untrained float64 learner with ``pairs`` key pairs per label (and ``extra`` units left over), eval mode."""
    torch.manual_seed(0)
    return LSTMLearner(backbone=MLP(6, [8]), hidden_size=n_way * 2 * pairs + extra, num_layers=1, n_way=n_way,
                       matching_init=True, **kw).double().eval()


def matching_logits(learner: LSTMLearner | MANN, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
    """matching_init_'s LSTM written out step by step from its parameters' meaning: ``[B, M, N]``.

    Unit m of block j, pair k, sign s: i_t = sigmoid(+-WRITE_LOGIT) (+ for label j), f = sigmoid(FORGET_BIAS),
    g_t = tanh(s a_k(e_t)), o = sigmoid(s a_k(e_q)) with a_k(e) = key_std * p_k . e; after the support set
    c = sum_t f^(T - t) i_t g_t, the query step gives c' = f c + sigmoid(-WRITE_LOGIT) g(e_q) and
    h = o tanh(c'); logit_j = readout_init * sum over block j of h.
    """
    lstm = learner.lstm if isinstance(learner, LSTMLearner) else learner.controller
    n_way, hidden = learner.n_way, lstm.hidden_size
    pairs = hidden // n_way // 2
    units = n_way * 2 * pairs
    weight_ih = lstm.weight_ih_l0 if isinstance(lstm, nn.LSTM) else lstm.weight_ih
    keys = weight_ih[2 * hidden : 2 * hidden + units, : learner.embed_dim]  # the cell candidate's rows
    f, leak = torch.sigmoid(torch.tensor(FORGET_BIAS, dtype=sx.dtype)), torch.sigmoid(torch.tensor(-WRITE_LOGIT, dtype=sx.dtype))
    block = torch.arange(units) // (2 * pairs)
    with torch.no_grad():
        e_s, e_q = learner.embed_inputs(sx), learner.embed_inputs(qx)
        steps = sx.shape[1]
        opens = (F.one_hot(sy, n_way).to(sx.dtype)[..., block] > 0)  # [B, T, U]: example t's label is the unit's block
        i = torch.where(opens, 1 - leak, leak)
        decay = f ** (steps - 1 - torch.arange(steps, dtype=sx.dtype))  # f^(T - t), t = 1..T
        cell = torch.einsum("t,btu,btu->bu", decay, i, torch.tanh(e_s @ keys.T))  # [B, U]
        a_q = e_q @ keys.T  # [B, M, U]
        h = torch.sigmoid(a_q) * torch.tanh(f * cell[:, None] + leak * torch.tanh(a_q))
        return learner.head.weight[0, 0] * torch.einsum("bmu,un->bmn", h, F.one_hot(block, n_way).to(sx.dtype))


def test_parameters_follow_the_documented_layout():
    learner = matcher(n_way=3, pairs=4, extra=2, key_std=0.5, readout_init=2.0)
    hidden, e = 26, 8
    w, w_hh = learner.lstm.weight_ih_l0, learner.lstm.weight_hh_l0
    b = learner.lstm.bias_ih_l0 + learner.lstm.bias_hh_l0
    block = torch.arange(24) // 8
    assert torch.all(w_hh == 0)
    assert torch.equal(w[:24, e:], 12.0 * F.one_hot(block, 3).double()) and torch.all(w[:hidden, :e] == 0)
    assert torch.all(b[:hidden] == -6.0) and torch.all(b[hidden : 2 * hidden] == 6.0)
    assert torch.all(w[hidden : 2 * hidden] == 0) and torch.all(b[2 * hidden :] == 0)
    cell, out = w[2 * hidden : 2 * hidden + 24], w[3 * hidden : 3 * hidden + 24]
    assert torch.equal(cell, out) and torch.all(cell[:, e:] == 0)
    assert torch.all(w[2 * hidden + 24 : 3 * hidden] == 0) and torch.all(w[3 * hidden + 24 :] == 0)  # 2 units left over
    keys = cell[:, :e]
    torch.testing.assert_close(keys[0::2], -keys[1::2])  # pairs of opposite keys
    torch.testing.assert_close(keys[:8], keys[8:16])  # every block has the same keys
    torch.testing.assert_close(keys[0:8:2].norm(dim=1), torch.full((4,), 0.5, dtype=torch.float64))  # key_std * unit rows
    torch.testing.assert_close(keys[0:8:2] @ keys[0:8:2].T, 0.25 * torch.eye(4, dtype=torch.float64))  # orthogonal
    torch.testing.assert_close(learner.head.weight, 2.0 * F.pad(F.one_hot(block, 3).T.double(), (0, 2)))
    assert torch.all(learner.head.bias == 0)


@pytest.mark.parametrize("k_shot", [1, 3])
def test_logits_equal_the_written_out_matcher_in_float64(k_shot):
    learner = matcher(n_way=4, pairs=5, extra=3, key_std=0.8)
    sx, sy, qx = (t.double() if t.is_floating_point() else t for t in flat_task(b=2, n_way=4, k=k_shot, m=5, d=6))
    with torch.no_grad():
        logits = learner(sx, sy, qx)
    torch.testing.assert_close(logits, matching_logits(learner, sx, sy, qx), rtol=1e-10, atol=1e-12)


def test_mann_starts_as_the_same_matcher_with_its_memory_unread():
    torch.manual_seed(0)
    mann = MANN(backbone=MLP(6, [8]), controller_size=27, memory_slots=6, memory_width=4, read_heads=2, n_way=3,
                matching_init=True, key_std=0.8).double().eval()
    reads = slice(8 + 3, None)  # the controller's inputs after [embedding, label]
    assert torch.all(mann.controller.weight_ih[:, reads] == 0) and torch.all(mann.head.weight[:, 27:] == 0)
    sx, sy, qx = (t.double() if t.is_floating_point() else t for t in flat_task(b=2, n_way=3, k=2, m=4, d=6))
    with torch.no_grad():
        logits = mann(sx, sy, qx)
    torch.testing.assert_close(logits, matching_logits(mann, sx, sy, qx), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="input_bias, output_bias and zero_recurrent"):
        MANN(backbone=MLP(6, [8]), n_way=3, matching_init=True, zero_recurrent=True)


def test_small_keys_give_the_dot_product_of_the_query_with_each_class():
    """Keys spanning the embedding (2 x 8 units a label for E = 8) and small: logits ~ r k^2 / 2 <e_q, e_s>."""
    key_std = 0.05
    learner = matcher(n_way=3, pairs=8, key_std=key_std, readout_init=1.0)
    sx, sy, qx = (t.double() if t.is_floating_point() else t for t in flat_task(b=2, n_way=3, k=1, m=4, d=6))
    with torch.no_grad():
        logits = learner(sx, sy, qx)
        e_s, e_q = learner.embed_inputs(sx), learner.embed_inputs(qx)
    per_class = torch.einsum("btn,bte->bne", F.one_hot(sy, 3).double(), e_s)  # each class's support embedding
    dot = torch.einsum("bme,bne->bmn", e_q, per_class)
    expected = key_std**2 / 2 * torch.sigmoid(torch.tensor(6.0)) * dot
    torch.testing.assert_close(logits, expected.to(logits.dtype), rtol=0.02, atol=2e-4)


def test_a_query_equal_to_a_support_example_gets_its_label():
    """The untrained matcher is a nearest-neighbour rule on layer-normalised embeddings (cosine similarity)."""
    learner = matcher(n_way=5, pairs=8, key_std=0.5)
    sx, sy, _ = (t.double() if t.is_floating_point() else t for t in flat_task(b=3, n_way=5, k=1, m=1, d=6))
    with torch.no_grad():
        predicted = learner(sx, sy, sx).argmax(-1)
    assert torch.equal(predicted, sy)


def test_class_logit_reads_its_own_examples_up_to_the_write_leak():
    sx, sy, qx = flat_task(b=2, n_way=4, k=2, m=3, d=6)
    changed = sx.clone()
    changed[sy == 2] = torch.randn_like(changed[sy == 2]) * 3
    learner = matcher(n_way=4, pairs=4).float()
    with torch.no_grad():
        before, after = learner(sx, sy, qx), learner(changed, sy, qx)
    others = [0, 1, 3]
    # the other labels' examples write sigmoid(-6) = 0.0025 of themselves into a block
    assert (after[..., others] - before[..., others]).abs().max() < 0.02
    assert (after[..., 2] - before[..., 2]).abs().max() > 0.1


def test_queries_stay_independent_and_every_parameter_gets_a_gradient():
    learner = matcher(n_way=3, pairs=3).float()
    sx, sy, qx = flat_task(b=2, n_way=3, k=2, m=5, d=6)
    assert_queries_answered_independently(learner, sx, sy, qx)
    learner.train()
    loss = F.cross_entropy(learner(sx, sy, qx).flatten(0, 1), torch.randint(0, 3, (10,)))
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="classification and num_layers=1.*'regression'"):
        LSTMLearner(backbone=MLP(1, [8]), kind="regression", num_layers=1, matching_init=True)
    with pytest.raises(ValueError, match="num_layers=2"):
        LSTMLearner(backbone=MLP(6, [8]), n_way=3, num_layers=2, matching_init=True)
    with pytest.raises(ValueError, match="label_slots, input_bias, output_bias and zero_recurrent"):
        LSTMLearner(backbone=MLP(6, [8]), n_way=3, num_layers=1, matching_init=True, output_bias=-2.0)
    with pytest.raises(ValueError, match="at least 2 units per label: 5 labels for hidden_size=9"):
        LSTMLearner(backbone=MLP(6, [8]), n_way=5, hidden_size=9, num_layers=1, matching_init=True)
    with pytest.raises(ValueError, match="key_scale and readout_scale must be > 0"):
        LSTMLearner(backbone=MLP(6, [8]), n_way=3, num_layers=1, matching_init=True, readout_init=0.0)
    with pytest.raises(ValueError, match="head 16 -> 4 for n_way=3"):
        matching_init_(nn.LSTM(11, 16), nn.Linear(16, 4), 8, 3)


@pytest.mark.slow
def test_learns_omniglot_20way_1shot_within_60_steps(one_thread):
    """Real data: the matcher's start takes 20-way 1-shot far above chance (0.05) in 60 meta-iterations."""
    from rnnmeta.nets import Conv4

    from helpers import short_omniglot_run

    torch.manual_seed(0)
    learner = LSTMLearner(backbone=Conv4(hidden=32, track_running_stats=True), n_way=20, hidden_size=512, num_layers=1,
                          matching_init=True)
    # measured: 0.516 (seed 0) and 0.504 (seed 1) in 14 CPU-s (the key-value start: 0.257 after 150 steps)
    acc = short_omniglot_run(learner, n_way=20, q_queries=1, meta_batch_size=4, steps=60, gradient_clip_val=1.0)
    assert acc > 0.35, f"20-way 1-shot accuracy {acc:.3f} after 60 steps; chance is 0.05"
