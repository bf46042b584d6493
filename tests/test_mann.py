"""MANN: the LRU-access memory from its definition, convex reads, query independence, reset, gradients, learning."""

from __future__ import annotations

from functools import partial
import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnmeta.episode import Episode
from rnnmeta.learners.mann import MANN, LRUAMemory, MANNPredictor, MemoryState
from rnnmeta.nets import MLP, Conv4

from helpers import assert_adapt_reads_the_support_once, assert_queries_answered_independently, finite_difference_grad, flat_task, image_task, short_omniglot_run


def small_mann(n_way: int = 3, backbone: nn.Module | None = None, **kw) -> MANN:
    """A small MANN on 16x16 images (fast), in evaluation mode."""
    torch.manual_seed(0)
    if backbone is None:
        backbone = Conv4(hidden=8, image_size=16, track_running_stats=True)
    kw = {"controller_size": 16, "memory_slots": 10, "memory_width": 6, "read_heads": 2, **kw}
    return MANN(backbone=backbone, n_way=n_way, **kw).eval()




def random_state(mem: LRUAMemory, b: int = 3, seed: int = 0) -> MemoryState:
    g = torch.Generator().manual_seed(seed)
    read_weights = torch.softmax(torch.randn(b, mem.heads, mem.slots, generator=g), -1)
    return MemoryState(
        memory=torch.randn(b, mem.slots, mem.width, generator=g),
        usage=torch.rand(b, mem.slots, generator=g) * 3,
        read_weights=read_weights,
        reads=torch.randn(b, mem.heads, mem.width, generator=g),
    )


# ------------------------------------------------------------------ the memory
def test_santoro_step_matches_the_paper_equations_in_float64():
    """One LRUA step written out from Santoro et al. (2016): k = tanh(W_k h), a = tanh(W_a h),
    w^w = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1} (eq. 7), least-used row cleared,
    M_t(i) = M_{t-1}(i) + w^w(i) a (eq. 8), w^r(i) = softmax_i(beta K(k, M_t(i))) (eqs. 2-3),
    r = sum_i w^r(i) M_t(i) (eq. 4), w^u = gamma w^u_{t-1} + w^r + w^w (eq. 5); scalar loops, float64."""
    torch.manual_seed(0)
    slots, width, heads, ctrl, gamma = 7, 3, 2, 5, 0.8
    mem = LRUAMemory(controller_size=ctrl, memory_slots=slots, memory_width=width, read_heads=heads, gamma=gamma,
                     addressing="santoro", tie_add_init=False).double()  # keys and add vectors differ
    assert mem.addressing == "santoro" and mem.per_head == 2 * width + 2
    state = random_state(mem, b=2, seed=3)
    state = MemoryState(*(t.double() for t in (state.memory, state.usage, state.read_weights, state.reads)))
    h = torch.randn(2, ctrl, dtype=torch.float64)
    new = mem.write_read(h, state)
    W, bias = mem.interface.weight.detach().tolist(), mem.interface.bias.detach().tolist()

    def affine(row: int, hb: list[float]) -> float:
        return bias[row] + sum(W[row][j] * hb[j] for j in range(ctrl))

    for b in range(2):
        hb, M = h[b].tolist(), state.memory[b].tolist()
        usage, prev_read = state.usage[b].tolist(), state.read_weights[b].tolist()
        order = sorted(range(slots), key=lambda i: (usage[i], i))  # m(w^u_{t-1}, n): the n least-used slots
        heads_out = []
        for r in range(heads):
            base = r * mem.per_head
            k = [math.tanh(affine(base + d, hb)) for d in range(width)]
            a = [math.tanh(affine(base + width + d, hb)) for d in range(width)]
            alpha = 1.0 / (1.0 + math.exp(-affine(base + 2 * width, hb)))
            beta = 1.0 + math.log1p(math.exp(affine(base + 2 * width + 1, hb)))
            w_write = [alpha * prev_read[r][i] + (1 - alpha) * (1.0 if i == order[r] else 0.0) for i in range(slots)]
            heads_out.append((k, a, beta, w_write))
        M = [[0.0] * width if i == order[0] else list(M[i]) for i in range(slots)]  # least-used row cleared
        for _, a, _, w_write in heads_out:
            for i in range(slots):
                M[i] = [M[i][d] + w_write[i] * a[d] for d in range(width)]
        torch.testing.assert_close(new.memory[b], torch.tensor(M, dtype=torch.float64), rtol=1e-12, atol=1e-12)
        new_usage = [gamma * u for u in usage]
        for r, (k, _, beta, w_write) in enumerate(heads_out):
            cos = []
            for i in range(slots):
                dot = sum(k[d] * M[i][d] for d in range(width))
                norms = math.sqrt(sum(x * x for x in k)) * math.sqrt(sum(x * x for x in M[i]))
                cos.append(dot / (norms + 1e-8))
            z = sum(math.exp(beta * c) for c in cos)
            w_read = [math.exp(beta * c) / z for c in cos]
            read = [sum(w_read[i] * M[i][d] for i in range(slots)) for d in range(width)]
            torch.testing.assert_close(new.read_weights[b, r], torch.tensor(w_read, dtype=torch.float64), rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(new.reads[b, r], torch.tensor(read, dtype=torch.float64), rtol=1e-12, atol=1e-12)
            new_usage = [new_usage[i] + w_read[i] + w_write[i] for i in range(slots)]
        torch.testing.assert_close(new.usage[b], torch.tensor(new_usage, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_santoro_keys_and_add_vectors_are_bounded_and_distinct():
    torch.manual_seed(0)
    mem = LRUAMemory(controller_size=6, memory_slots=8, memory_width=5, read_heads=2)
    assert mem.addressing == "santoro"
    h = 100 * torch.randn(4, 6)
    key, add, gate, beta = mem.heads_from(h)
    assert key.abs().max() <= 1 and add.abs().max() <= 1
    torch.testing.assert_close(add, key, rtol=0, atol=0)  # tie_add_init: equal initial values ...
    with torch.no_grad():
        mem.interface.weight[mem.width].add_(1.0)  # ... but separate parameters
    key, add, _, _ = mem.heads_from(h)
    assert not torch.allclose(key[:, 0], add[:, 0]) and torch.equal(key[:, 1], add[:, 1])
    untied = LRUAMemory(controller_size=6, memory_slots=8, memory_width=5, read_heads=2, tie_add_init=False)
    key, add, _, _ = untied.heads_from(h)
    assert not torch.allclose(key, add)
    shared = LRUAMemory(controller_size=6, memory_slots=8, memory_width=5, read_heads=2, addressing="shared_key")
    key, add, _, _ = shared.heads_from(100 * torch.randn(4, 6))
    assert torch.equal(key, add) and key.abs().max() > 1
    with pytest.raises(ValueError, match="addressing must be 'santoro' or 'shared_key', got 'lru'"):
        LRUAMemory(controller_size=6, addressing="lru")


def test_write_read_matches_the_paper_step_by_step():
    """shared_key: Santoro et al. (2016), eqs. for w^w, M_t, w^r, r_t, w^u, with one key, recomputed naively slot by slot."""
    torch.manual_seed(0)
    mem = LRUAMemory(controller_size=7, memory_slots=9, memory_width=4, read_heads=3, gamma=0.9,
                     addressing="shared_key").double()
    state = random_state(mem)
    state = MemoryState(*(t.double() for t in (state.memory, state.usage, state.read_weights, state.reads)))
    h = torch.randn(3, 7, dtype=torch.float64)
    new = mem.write_read(h, state)
    raw = mem.interface(h).view(3, 3, mem.per_head)
    for b in range(3):
        order = sorted(range(9), key=lambda i: (float(state.usage[b, i]), i))
        memory = state.memory[b].clone()
        memory[order[0]] = 0.0  # the least-used row is cleared before writing
        writes = []
        for r in range(3):
            alpha = torch.sigmoid(raw[b, r, 4])
            lu = torch.zeros(9, dtype=torch.float64)
            lu[order[r]] = 1.0  # head r: the r-th least-used slot
            writes.append(alpha * state.read_weights[b, r] + (1 - alpha) * lu)
        for r in range(3):
            for i in range(9):
                memory[i] = memory[i] + writes[r][i] * raw[b, r, :4]
        torch.testing.assert_close(new.memory[b], memory)
        usage = 0.9 * state.usage[b] + sum(writes)
        for r in range(3):
            key, beta = raw[b, r, :4], 1 + F.softplus(raw[b, r, 5])
            cos = torch.stack([key @ memory[i] / (key.norm() * memory[i].norm() + 1e-8) for i in range(9)])
            weights = torch.softmax(beta * cos, 0)
            torch.testing.assert_close(new.read_weights[b, r], weights)
            torch.testing.assert_close(new.reads[b, r], weights @ memory)
            usage = usage + weights
        torch.testing.assert_close(new.usage[b], usage)


def test_first_write_of_each_head_goes_to_its_own_fresh_slot():
    mem = LRUAMemory(controller_size=5, memory_slots=8, memory_width=3, read_heads=2)
    state = mem.initial_state(2, torch.device("cpu"), torch.float32)
    assert torch.all(state.memory == mem.init_value) and torch.all(state.usage == 0)
    h = torch.randn(2, 5)
    new = mem.write_read(h, state)
    adds = mem.heads_from(h)[1]
    torch.testing.assert_close(new.memory[:, 0], adds[:, 0])  # slot 0 cleared, then written by head 0
    torch.testing.assert_close(new.memory[:, 1], adds[:, 1] + mem.init_value)
    torch.testing.assert_close(new.memory[:, 2:], state.memory[:, 2:])


def test_reads_are_convex_combinations_of_memory_rows():
    learner = small_mann()
    sx, sy, qx = image_task(m=4)
    with torch.no_grad():
        h, c, state = learner.read_support(sx, sy)
        hq = torch.randn(2, 4, 16)
        reads, weights = learner.memory.read(hq, state.memory)
    for w in (state.read_weights, weights):
        assert torch.all(w >= 0)
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    torch.testing.assert_close(state.reads, torch.bmm(state.read_weights, state.memory))
    torch.testing.assert_close(reads, torch.einsum("bmrn,bnw->bmrw", weights, state.memory))
    # a fixed sharpness gives convex reads too, and a sharper softmax concentrates them
    blunt = LRUAMemory(16, 10, 6, 2, read_sharpness=0.5)
    sharp = LRUAMemory(16, 10, 6, 2, read_sharpness=50.0)
    sharp.load_state_dict(blunt.state_dict())
    wb, ws = (m.read(hq, state.memory)[1] for m in (blunt, sharp))
    assert torch.all(ws >= 0) and torch.allclose(ws.sum(-1), torch.ones(ws.shape[:-1]))
    assert ws.max(-1).values.mean() > wb.max(-1).values.mean()


# ------------------------------------------------------------------ the learner
def test_controller_starts_as_the_lstm_learners_first_layer():
    """Classification: key-value controller and a head whose controller part reads the label directions."""
    e, labels, h = 8, 3, 12
    learner = MANN(backbone=MLP(6, [e]), controller_size=h, memory_slots=4, memory_width=5, read_heads=2, n_way=labels)
    w, b_ih = learner.controller.weight_ih, learner.controller.bias_ih
    assert torch.equal(w[:h, :e], w[3 * h :, :e]) and torch.all(w[2 * h : 3 * h, :e] == 0)
    assert torch.all(b_ih[h : 2 * h] == 3.0)
    torch.testing.assert_close(learner.head.weight[:, :h], 0.3 * torch.tanh(w[2 * h : 3 * h, e : e + labels]).T)
    reads = learner.head.weight[:, h:]
    assert reads.shape == (labels, 2 * 5) and reads.abs().sum() > 0  # the memory-read part keeps nn.Linear's values
    plain = MANN(backbone=MLP(6, [e]), controller_size=h, memory_slots=4, memory_width=5, read_heads=2, n_way=labels,
                 key_value_init=False)
    assert not torch.equal(plain.controller.weight_ih[:h, :e], plain.controller.weight_ih[3 * h :, :e])
    regression = MANN(backbone=MLP(1, [e]), controller_size=h, memory_slots=4, memory_width=5, read_heads=2, kind="regression")
    assert not torch.all(regression.controller.weight_ih[2 * h : 3 * h, :e] == 0)  # regression keeps the default
    # key_std scales the shared gate weights, input_bias sets the input gate's bias (sparser writes)
    torch.manual_seed(0)
    wide = MANN(backbone=MLP(6, [e]), controller_size=h, memory_slots=4, memory_width=5, read_heads=2, n_way=labels,
                key_std=4.0, input_bias=-2.0).controller
    torch.manual_seed(0)
    narrow = MANN(backbone=MLP(6, [e]), controller_size=h, memory_slots=4, memory_width=5, read_heads=2, n_way=labels).controller
    torch.testing.assert_close(wide.weight_ih[:h, :e], 2 * narrow.weight_ih[:h, :e])
    assert torch.all(wide.bias_ih[:h] == -2.0) and torch.all(wide.bias_hh[:h] == 0)
    assert not torch.all(narrow.bias_ih[:h] == narrow.bias_ih[0])  # None keeps nn.LSTMCell's random bias
    # output_bias sets the output gate's (sparse reads), zero_recurrent zeroes the controller's W_hh
    sparse_read = MANN(backbone=MLP(6, [e]), controller_size=h, memory_slots=4, memory_width=5, read_heads=2, n_way=labels,
                       input_bias=-2.0, output_bias=-2.0, zero_recurrent=True).controller
    assert torch.all(sparse_read.bias_ih[3 * h :] + sparse_read.bias_hh[3 * h :] == -2.0)
    assert torch.all(sparse_read.weight_hh == 0) and narrow.weight_hh.std() > 0
    with pytest.raises(ValueError, match="options of the key-value initialisation"):  # regression runs no such init
        MANN(backbone=MLP(1, [e]), controller_size=h, memory_slots=4, kind="regression", zero_recurrent=True)


def test_shapes_and_default_backbones():
    learner = MANN(n_way=5).eval()
    assert isinstance(learner.backbone, Conv4) and learner.memory.slots == 128 and learner.memory.width == 40
    sx, sy, qx = image_task(n_way=5, k=1, m=4, side=28)
    with torch.no_grad():
        assert learner(sx, sy, qx).shape == (2, 4, 5)
    reg = MANN(kind="regression", target_dim=1, controller_size=16, memory_slots=12, memory_width=5).eval()
    assert isinstance(reg.backbone, MLP) and reg.label_dim == 2
    for k in (5, 10):
        assert reg(torch.randn(3, k, 1), torch.randn(3, k, 1), torch.randn(3, 7, 1)).shape == (3, 7, 1)


def test_queries_are_answered_independently_and_read_only():
    learner = small_mann()
    sx, sy, qx = image_task(m=6)
    assert_queries_answered_independently(learner, sx, sy, qx)
    with torch.no_grad():
        predict = learner.adapt(sx, sy)
        memory = predict.state.memory.clone()
        predict(qx)
    assert torch.equal(predict.state.memory, memory), "queries must not write to the memory"


def test_queries_independent_in_training_mode_with_a_per_example_backbone():
    learner = small_mann(backbone=MLP(6, [8])).train()
    sx, sy, qx = flat_task(m=5)
    base = learner(sx, sy, qx)
    one_by_one = torch.cat([learner(sx, sy, qx[:, j : j + 1]) for j in range(5)], dim=1)
    torch.testing.assert_close(one_by_one, base, rtol=0, atol=1e-6)


def test_answer_depends_on_support_labels():
    learner = small_mann()
    sx, sy, qx = image_task()
    with torch.no_grad():
        assert not torch.allclose(learner(sx, sy, qx), learner(sx, (sy + 1) % 3, qx))


def test_query_labels_never_reach_the_model():
    assert list(inspect.signature(MANN.forward).parameters) == ["self", "support_x", "support_y", "query_x"]
    learner = small_mann()
    sx, sy, qx = image_task(m=6)
    captured: list[torch.Tensor] = []
    handle = learner.register_forward_hook(lambda mod, args, out: captured.append(out.detach().clone()))
    qy = torch.randint(0, 3, (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss_a, _ = learner.episode_step(Episode(sx, sy, qx, qy, n_way=3))
        loss_b, _ = learner.episode_step(Episode(sx, sy, qx, (qy + 1) % 3, n_way=3))
    handle.remove()
    torch.testing.assert_close(captured[0], captured[1], rtol=0, atol=0)
    assert not torch.allclose(loss_a, loss_b)


def test_memory_is_reset_between_episodes():
    learner = small_mann(backbone=MLP(6, [8]))
    first, second = flat_task(seed=1), flat_task(seed=2)
    with torch.no_grad():
        fresh = learner(*second)
        _, _, state_first = learner.read_support(*first[:2])
        after_first = learner(*second)
        _, _, state_second = learner.read_support(*second[:2])
        pair = learner(*(torch.cat([a, b]) for a, b in zip(first, second)))
    torch.testing.assert_close(after_first, fresh, rtol=0, atol=0)
    torch.testing.assert_close(pair[2:], fresh, rtol=0, atol=1e-6)
    assert not torch.allclose(state_first.memory, state_second.memory)
    # every episode starts from the same constant memory, whatever ran before
    init = learner.memory.initial_state(2, torch.device("cpu"), torch.float32)
    assert torch.all(init.memory == learner.memory.init_value) and torch.all(init.usage == 0)


def test_adapt_holds_the_state_after_the_support_set():
    assert_adapt_reads_the_support_once(small_mann(), MANNPredictor, *image_task(m=5))


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    if kind == "classification":
        learner = small_mann().train()
        sx, sy, qx = image_task(k=3)
        qy = torch.randint(0, 3, (2, 5))
        loss = F.cross_entropy(learner(sx, sy, qx).flatten(0, 1), qy.flatten())
    else:
        learner = MANN(kind="regression", controller_size=8, memory_slots=12, memory_width=5, read_heads=2).train()
        sx, sy, qx = torch.randn(2, 5, 1), torch.randn(2, 5, 1), torch.randn(2, 4, 1)
        loss = (learner(sx, sy, qx) - torch.randn(2, 4, 1)).pow(2).mean()
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name} has a zero or non-finite gradient"


def test_gradient_matches_finite_differences_in_float64():
    learner = small_mann(backbone=MLP(4, [5]), controller_size=5, memory_slots=6, memory_width=3).double().train()
    sx, sy, qx = flat_task(d=4, m=3)
    sx, qx = sx.double(), qx.double()
    qy = torch.tensor([[0, 1, 2], [2, 2, 0]])

    def loss():
        return F.cross_entropy(learner(sx, sy, qx).flatten(0, 1), qy.flatten())

    # biases only (few entries, so the check stays fast) on every path: backbone, controller, memory heads, output
    params = [learner.memory.interface.bias, learner.controller.bias_hh, learner.backbone.layers[0].bias, learner.head.bias]
    grads = torch.autograd.grad(loss(), params)
    with torch.no_grad():
        numeric = finite_difference_grad(loss, params, eps=1e-6)
    for g, n in zip(grads, numeric):
        torch.testing.assert_close(g, n, rtol=1e-5, atol=1e-8)


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="controller_size"):
        MANN(controller_size=0)
    with pytest.raises(ValueError, match="memory_slots"):
        MANN(memory_slots=0)
    with pytest.raises(ValueError, match="read_heads"):
        MANN(memory_slots=4, read_heads=5)
    with pytest.raises(ValueError, match="gamma"):
        MANN(gamma=1.0)
    with pytest.raises(ValueError, match="read_sharpness"):
        MANN(read_sharpness=0.0)
    with pytest.raises(ValueError, match="key_std must be > 0, got -1"):
        MANN(key_std=-1.0)
    with pytest.raises(ValueError, match="embedding_dim"):
        MANN(backbone=nn.Flatten())
    learner = small_mann()
    sx, sy, qx = image_task()
    with pytest.raises(TypeError, match="int64"):
        learner(sx, sy.int(), qx)
    with pytest.raises(ValueError, match="query_x"):
        learner(sx, sy, qx[:, :, :, :8])


@pytest.mark.slow
def test_learns_omniglot_5way_1shot_far_above_chance(one_thread):
    torch.manual_seed(0)
    learner = MANN(backbone=Conv4(hidden=16, track_running_stats=True), controller_size=64, memory_slots=16,
                   n_way=5, optimizer=partial(torch.optim.Adam, lr=3e-3))
    acc = short_omniglot_run(learner, n_way=5, k_shot=1, q_queries=5, meta_batch_size=16, steps=120,
                             test_episodes=100, gradient_clip_val=1.0)
    assert acc > 0.4, f"5-way 1-shot accuracy {acc:.3f} after a short run; chance is 0.2"
