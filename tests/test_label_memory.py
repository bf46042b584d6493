"""The label memory of LSTMLearner, MANN and SNAIL: its read from the definition, causality in a stream, the vote readout,
query independence, gradients, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnmeta.learners import MANN, SNAIL, LSTMLearner
from rnnmeta.learners.label_memory import LabelMemory
from rnnmeta.learners.lstm import LSTMPredictor
from rnnmeta.learners.mann import MANNPredictor
from rnnmeta.learners.online import encode_previous_labels, labels_of_steps
from rnnmeta.learners.snail import SNAILPredictor
from rnnmeta.nets import MLP

from helpers import assert_adapt_reads_the_support_once, assert_queries_answered_independently, finite_difference_grad, flat_task

LEARNERS = {
    "lstm": lambda **kw: LSTMLearner(backbone=MLP(6, [8]), hidden_size=12, num_layers=1, **kw),
    "mann": lambda **kw: MANN(backbone=MLP(6, [8]), controller_size=10, memory_slots=8, memory_width=4, read_heads=2, **kw),
    "snail": lambda **kw: SNAIL(backbone=MLP(6, [8]), max_shots=2, key_sizes=[8, 8], value_sizes=[4, 4], tc_filters=[4], **kw),
}
#: the layer that reads the learner's own features (LSTMLearner's and MANN's head; SNAIL's network output)
FEATURE_HEADS = {"lstm": lambda learner: learner.head, "mann": lambda learner: learner.head,
                 "snail": lambda learner: learner.network.output}
PREDICTORS = {"lstm": LSTMPredictor, "mann": MANNPredictor, "snail": SNAILPredictor}
#: LSTMLearner's and MANN's stream readout starts at the vote only without their own readout_init
STREAM_ARGS = {"lstm": {"readout_init": 0}, "mann": {"readout_init": 0}, "snail": {}}


def built(name: str, n_way: int = 3, **kw):
    torch.manual_seed(0)
    return LEARNERS[name](n_way=n_way, **kw).eval()


def test_the_read_is_a_softmax_of_scaled_cosines_over_the_support_labels_in_float64():
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(2, 4, 5, generator=g, dtype=torch.float64), torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 6), generator=g)
    vote = LabelMemory(n_way=3, sharpness=7.0)(q, s, y)
    for b in range(2):
        for m in range(4):
            cos = [float(q[b, m] @ s[b, j] / (q[b, m].norm() * s[b, j].norm())) for j in range(6)]
            z = sum(math.exp(7.0 * c) for c in cos)
            expected = [sum(math.exp(7.0 * cos[j]) / z for j in range(6) if y[b, j] == c) for c in range(3)]
            torch.testing.assert_close(vote[b, m], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(vote.sum(-1), torch.ones(2, 4, dtype=torch.float64))


def test_in_a_stream_each_step_reads_only_the_labelled_steps_before_it():
    g = torch.Generator().manual_seed(1)
    e = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    prev_y = torch.tensor([[-1, 0, 2, 1, 0, 2, 1], [-1, 1, 1, 0, 2, 2, 0]])  # the labels one step late
    memory = LabelMemory(n_way=3, sharpness=4.0)
    votes = memory.stream(e, labels_of_steps(encode_previous_labels(prev_y, 3)))
    assert torch.equal(votes[:, 0], torch.zeros(2, 3, dtype=torch.float64))  # nothing is known before the first step
    for t in range(1, 7):  # step t reads steps 0..t-1, whose labels are prev_y[:, 1..t]
        expected = memory(e[:, t : t + 1], e[:, :t], prev_y[:, 1 : t + 1])
        torch.testing.assert_close(votes[:, t : t + 1], expected, rtol=1e-12, atol=1e-12)
    later = e.clone()
    later[:, 4:] += 1.0  # steps from 4 on change: no vote before step 4 may move
    torch.testing.assert_close(memory.stream(later, labels_of_steps(encode_previous_labels(prev_y, 3)))[:, :4], votes[:, :4])


@pytest.mark.parametrize("rows", ["examples", "classes"])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_vote_readout_starts_the_head_as_gain_times_the_vote(name, rows):
    learner = built(name, label_memory=5.0, vote_readout=20.0, label_memory_rows=rows)
    sx, sy, qx = flat_task(n_way=3, k=2, m=4)
    with torch.no_grad():
        logits = learner(sx, sy, qx)
        e = lambda x: learner.embed_inputs(x)  # noqa: E731 (what the memory and the head read)
        vote = LabelMemory(3, 5.0, rows)(e(qx), e(sx), sy)
    torch.testing.assert_close(logits, 20.0 * vote)
    relabelled = (sy + 1) % 3  # every support example changes class: the votes follow
    with torch.no_grad():
        torch.testing.assert_close(learner(sx, relabelled, qx), logits[..., [2, 0, 1]])


@pytest.mark.parametrize("name", ["lstm", "mann"])
def test_the_head_reads_the_vote_beside_the_learners_own_features(name):
    plain, with_memory = built(name), built(name, label_memory=5.0)
    assert with_memory.head.in_features == plain.head.in_features + 3
    sx, sy, qx = flat_task(n_way=3, k=2, m=4)
    with torch.no_grad():
        base = with_memory(sx, sy, qx)
        with_memory.head.weight[:, -3:] = 0.0  # without the vote's weights, the head reads what the plain learner reads
        without_vote = with_memory(sx, sy, qx)
    assert not torch.allclose(base, without_vote)
    with torch.no_grad():
        with_memory.head.weight[:, -3:] = 0.0
        plain.load_state_dict({k: v[:, :-3] if k == "head.weight" else v for k, v in with_memory.state_dict().items()})
        torch.testing.assert_close(plain(sx, sy, qx), without_vote)


def test_snail_adds_the_vote_heads_reading_to_the_networks_answer():
    """SNAIL's answer is the network's output plus a linear vote head over the vote (one head over [features, vote])."""
    plain, with_memory = built("snail"), built("snail", label_memory=5.0)
    assert with_memory.vote_head.in_features == 3 and with_memory.vote_head.bias is None
    sx, sy, qx = flat_task(n_way=3, k=2, m=4)
    with torch.no_grad():
        e = with_memory.embed_inputs
        expected_vote = with_memory.vote_head(LabelMemory(3, 5.0)(e(qx), e(sx), sy))
        state = {k: v for k, v in with_memory.state_dict().items() if not k.startswith("vote_head.")}
        plain.load_state_dict(state)
        torch.testing.assert_close(with_memory(sx, sy, qx), plain(sx, sy, qx) + expected_vote)
        assert expected_vote.abs().max() > 0.01
        torch.testing.assert_close(with_memory.forward_naive(sx, sy, qx), with_memory(sx, sy, qx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", ["examples", "classes"])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_queries_are_answered_independently_and_adapt_reads_the_support_once(name, rows):
    learner = built(name, label_memory=5.0, vote_readout=20.0, label_memory_rows=rows)
    head = FEATURE_HEADS[name](learner)
    with torch.no_grad():  # the learner's own features join the vote, as after training
        head.weight.add_(0.1 * torch.randn_like(head.weight))
    sx, sy, qx = flat_task(n_way=3, k=2, m=5)
    # logits of about 20 (the gain): float32 rounds them to about 2e-6 when a batch is split otherwise
    assert_queries_answered_independently(learner, sx, sy, qx, atol=1e-5)
    assert_adapt_reads_the_support_once(learner, PREDICTORS[name], sx, sy, qx, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_the_gradient_through_the_vote_matches_finite_differences_in_float64(name):
    learner = built(name, label_memory=3.0, vote_readout=4.0).double().train()
    sx, sy, qx = flat_task(n_way=3, k=2, m=3)
    sx, qx = sx.double(), qx.double()
    qy = torch.tensor([[0, 1, 2], [2, 2, 0]])

    def loss():
        return F.cross_entropy(learner(sx, sy, qx).flatten(0, 1), qy.flatten())

    # at the vote readout's start the loss reaches the backbone through the vote alone
    params = [learner.backbone.layers[0].bias, FEATURE_HEADS[name](learner).bias]
    grads = torch.autograd.grad(loss(), params)
    assert grads[0].abs().sum() > 0
    with torch.no_grad():
        numeric = finite_difference_grad(loss, params, eps=1e-6)
    for analytic, fd in zip(grads, numeric):
        torch.testing.assert_close(analytic, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("rows", ["examples", "classes"])
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_the_online_protocol_reads_the_label_memory_causally(name, rows):
    learner = built(name, label_memory=5.0, vote_readout=20.0, label_memory_rows=rows, **STREAM_ARGS[name])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 6, generator=g)
    prev_y = torch.tensor([[-1, 0, 1, 2, 0, 1], [-1, 2, 2, 1, 0, 0]])
    with torch.no_grad():
        logits = learner.predict_stream(x, prev_y)
        e = learner.embed_inputs(x)
        expected = 20.0 * LabelMemory(3, 5.0, rows).stream(e, labels_of_steps(encode_previous_labels(prev_y, 3)))
        torch.testing.assert_close(logits, expected)
        later = x.clone()
        later[:, 3:] = torch.randn(2, 3, 6, generator=g)
        torch.testing.assert_close(learner.predict_stream(later, prev_y)[:, :3], logits[:, :3])


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_bad_label_memory_arguments_get_clear_errors(name):
    make = LEARNERS[name]
    with pytest.raises(ValueError, match="label_memory must be >= 0"):
        make(n_way=3, label_memory=-1.0)
    with pytest.raises(TypeError, match="label_memory must be a number"):
        make(n_way=3, label_memory="sharp")
    learner_class = {"lstm": LSTMLearner, "mann": MANN, "snail": SNAIL}[name]
    with pytest.raises(ValueError, match="needs kind='classification'"):
        learner_class(kind="regression", label_memory=1.0)
    with pytest.raises(ValueError, match="label_memory_rows must be .examples. or .classes., got .prototypes."):
        make(n_way=3, label_memory=1.0, label_memory_rows="prototypes")
    if name == "snail":  # without a label memory, SNAIL's vote_readout reads its first attention block's vote
        with pytest.raises(ValueError, match="vote_readout=10.0 reads the first attention block's similarity vote"):
            make(n_way=3, vote_readout=10.0)
        return
    with pytest.raises(ValueError, match="vote_readout=10.0 reads the label memory's vote: it needs label_memory > 0"):
        make(n_way=3, vote_readout=10.0)
    with pytest.raises(ValueError, match="vote_readout and matching_init"):
        make(n_way=3, label_memory=1.0, vote_readout=10.0, matching_init=True)


def test_class_rows_read_the_cosine_with_each_class_sum_in_float64():
    g = torch.Generator().manual_seed(3)
    q, s = torch.randn(2, 4, 5, generator=g, dtype=torch.float64), torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 2, 0, 0, 2, 0]])  # the second task has no example of class 1
    vote = LabelMemory(n_way=3, sharpness=6.0, rows="classes")(q, s, y)
    for b in range(2):
        present = [c for c in range(3) if (y[b] == c).any()]
        for m in range(4):
            cos = {c: float(F.cosine_similarity(q[b, m], s[b][y[b] == c].sum(0), dim=0)) for c in present}
            z = sum(math.exp(6.0 * v) for v in cos.values())
            expected = [math.exp(6.0 * cos[c]) / z if c in cos else 0.0 for c in range(3)]
            torch.testing.assert_close(vote[b, m], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_class_rows_in_a_stream_hold_the_labelled_steps_before_each_step():
    g = torch.Generator().manual_seed(4)
    e = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    prev_y = torch.tensor([[-1, 0, 2, 0, 1, 2, 1], [-1, 1, 1, 0, 2, 2, 0]])
    memory = LabelMemory(n_way=3, sharpness=4.0, rows="classes")
    votes = memory.stream(e, labels_of_steps(encode_previous_labels(prev_y, 3)))
    assert torch.equal(votes[:, 0], torch.zeros(2, 3, dtype=torch.float64))
    for t in range(1, 7):
        torch.testing.assert_close(votes[:, t : t + 1], memory(e[:, t : t + 1], e[:, :t], prev_y[:, 1 : t + 1]),
                                   rtol=1e-12, atol=1e-12)
