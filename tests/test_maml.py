"""MAML: the contract, exact meta-gradients against a float64 per-task reference, first order,
Meta-SGD, evaluation without graphs, argument checks, and learning on real Omniglot."""

from __future__ import annotations

from functools import partial
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from rnnmeta.learners.maml import MAML
from rnnmeta.nets import MLP, Conv4
from tests.helpers import finite_difference_grad, short_omniglot_run

B, N_WAY, SIDE = 3, 3, 16


def small_maml(**kw) -> MAML:
    kw.setdefault("backbone", Conv4(1, 4, SIDE))
    return MAML(n_way=N_WAY, **kw).double()


def cls_batch(k_shot: int = 2, m: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(B, N_WAY * k_shot, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    sy = torch.arange(N_WAY).repeat_interleave(k_shot).repeat(B, 1)
    qx = torch.rand(B, m, 1, SIDE, SIDE, generator=g, dtype=torch.float64)
    qy = torch.randint(0, N_WAY, (B, m), generator=g)
    return sx, sy, qx, qy


def reg_batch(k: int = 5, m: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx, qx = torch.rand(B, k, 1, generator=g) * 10 - 5, torch.rand(B, m, 1, generator=g) * 10 - 5
    return sx, torch.sin(sx), qx, torch.sin(qx)


def weights(learner: MAML) -> list[torch.Tensor]:
    return [p for n, p in learner.named_parameters() if not n.startswith("inner_lrs")]


def meta_loss(learner: MAML, batch) -> torch.Tensor:
    sx, sy, qx, qy = batch
    return learner.task_losses(learner(sx, sy, qx), qy).mean()


def meta_grads(learner: MAML, batch) -> list[torch.Tensor]:
    return list(torch.autograd.grad(meta_loss(learner, batch), list(learner.parameters())))


def reference(learner: MAML, batch, steps: int, lr: float, second_order: bool = True, loss=F.cross_entropy):
    """Textbook per-task MAML on the learner's own modules (nn.BatchNorm2d with batch statistics)."""
    sx, sy, qx, qy = batch
    model = nn.Sequential(learner.backbone, learner.head)
    total = 0.0
    for t in range(sx.shape[0]):
        fast = dict(model.named_parameters())
        for _ in range(steps):
            inner = loss(functional_call(model, fast, (sx[t],)), sy[t])
            grads = torch.autograd.grad(inner, list(fast.values()), create_graph=second_order)
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), grads)}
        total = total + loss(functional_call(model, fast, (qx[t],)), qy[t]) / sx.shape[0]
    return total, list(torch.autograd.grad(total, list(model.parameters())))


# ------------------------------------------------------------------ contract
def test_classification_shapes_and_default_backbone():
    learner = MAML(n_way=5)
    assert isinstance(learner.backbone, Conv4) and learner.head.out_features == 5
    sx, sy = torch.rand(2, 5, 1, 28, 28), torch.arange(5).repeat(2, 1)
    out = learner(sx, sy, torch.rand(2, 7, 1, 28, 28))
    assert out.shape == (2, 7, 5) and out.requires_grad


def test_regression_shapes_and_default_backbone():
    learner = MAML(kind="regression", target_dim=1, inner_lr=0.01)
    assert isinstance(learner.backbone, MLP) and learner.backbone.out_features == 40
    sx, sy, qx, _ = reg_batch()
    assert learner(sx, sy, qx).shape == (B, 7, 1)


def test_adapt_returns_predictor_matching_forward():
    learner = small_maml(inner_steps=2).eval()
    sx, sy, qx, _ = cls_batch()
    predictor = learner.adapt(sx, sy)
    assert torch.allclose(predictor(qx), learner(sx, sy, qx))
    assert predictor(qx[:, :1]).shape == (B, 1, N_WAY)


# ------------------------------------------------------------------ meta-gradients
@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_meta_gradient_matches_float64_per_task_reference(steps):
    torch.manual_seed(0)
    learner = small_maml(inner_steps=steps, inner_lr=0.4)
    batch = cls_batch()
    loss = meta_loss(learner, batch)
    ours = torch.autograd.grad(loss, weights(learner))
    ref_loss, ref = reference(learner, batch, steps, 0.4)
    assert torch.allclose(loss, ref_loss, rtol=0, atol=1e-12)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), (a - b).abs().max()
    # one meta-step of SGD lands on the same weights
    for p, a, b in zip(weights(learner), ours, ref):
        assert torch.allclose(p - 0.1 * a, p - 0.1 * b, rtol=0, atol=1e-7)


def test_meta_gradient_matches_finite_differences_and_is_zero_for_bias_before_batch_norm():
    torch.manual_seed(1)
    learner = small_maml(inner_steps=1, inner_lr=0.4)
    batch = cls_batch(m=3)
    grads = dict(zip([n for n, _ in learner.named_parameters()], meta_grads(learner, batch)))
    # a conv bias just before batch norm cancels in the normalisation: its true gradient is 0
    assert isinstance(learner.backbone.blocks[9], nn.BatchNorm2d)
    assert grads["backbone.blocks.8.bias"].abs().max() < 1e-10
    names = ["head.bias", "backbone.blocks.13.weight", "backbone.blocks.5.bias"]
    params = [dict(learner.named_parameters())[n] for n in names]
    fd = finite_difference_grad(lambda: meta_loss(learner, batch).detach(), params, eps=1e-6)
    for n, g in zip(names, fd):
        assert torch.allclose(grads[n], g, rtol=1e-5, atol=1e-7), n


def test_first_order_is_second_order_minus_the_dropped_term():
    torch.manual_seed(2)
    so, fo = small_maml(inner_lr=0.4), small_maml(inner_lr=0.4, first_order=True)
    fo.load_state_dict(so.state_dict())
    batch = cls_batch()
    sx, sy, qx, qy = batch
    g_so, g_fo = meta_grads(so, batch), meta_grads(fo, batch)
    model = nn.Sequential(so.backbone, so.head)
    theta = dict(model.named_parameters())
    g_q_total = [torch.zeros_like(p) for p in theta.values()]
    dropped = [torch.zeros_like(p) for p in theta.values()]
    for t in range(B):
        inner = F.cross_entropy(functional_call(model, theta, (sx[t],)), sy[t])
        g_s = torch.autograd.grad(inner, list(theta.values()), create_graph=True)
        adapted = {n: (p - 0.4 * g).detach().requires_grad_() for (n, p), g in zip(theta.items(), g_s)}  # leaves
        g_q = torch.autograd.grad(F.cross_entropy(functional_call(model, adapted, (qx[t],)), qy[t]) / B, list(adapted.values()))
        hvp = torch.autograd.grad(g_s, list(theta.values()), grad_outputs=g_q)  # H_support g_q
        for i in range(len(g_q)):
            g_q_total[i] += g_q[i]
            dropped[i] += -0.4 * hvp[i]
    for a_fo, a_so, gq, d in zip(g_fo, g_so, g_q_total, dropped):
        assert torch.allclose(a_fo, gq, rtol=0, atol=1e-10)
        assert torch.allclose(a_so - a_fo, d, rtol=0, atol=1e-10)
    assert max(d.abs().max() for d in dropped) > 1e-4  # the dropped term is not trivially zero here


@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("first_order,learn_lr", [(False, False), (True, False), (False, True)])
def test_batched_equals_per_task_loop(kind, first_order, learn_lr):
    torch.manual_seed(3)
    if kind == "classification":
        learner = small_maml(inner_steps=2, first_order=first_order, learn_inner_lr=learn_lr, batch_tasks=True)
        batch = cls_batch()
    else:
        learner = MAML(kind="regression", inner_steps=2, inner_lr=0.01, first_order=first_order, learn_inner_lr=learn_lr,
                       batch_tasks=True)
        learner = learner.double()
        batch = tuple(t.double() for t in reg_batch())
    assert learner._layers is not None  # the batched path is in use
    loss, grads = meta_loss(learner, batch), meta_grads(learner, batch)
    loop = MAML(**{**learner.hparams, "batch_tasks": False}).double()
    loop.load_state_dict(learner.state_dict())
    assert loop._layers is None
    loss_loop, grads_loop = meta_loss(loop, batch), meta_grads(loop, batch)
    assert torch.allclose(loss, loss_loop, rtol=0, atol=1e-12)
    for a, b in zip(grads, grads_loop):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("first_order,learn_lr", [(False, False), (True, False), (False, True)])
def test_training_step_meta_gradient_task_by_task_equals_whole_batch(first_order, learn_lr):
    """The training path frees each task's graph; its loss and .grad equal forward() on the whole batch."""
    from rnnmeta.episode import Episode

    torch.manual_seed(5)
    learner = small_maml(inner_steps=2, first_order=first_order, learn_inner_lr=learn_lr).train()
    sx, sy, qx, qy = cls_batch()
    expected_loss, expected = meta_loss(learner, cls_batch()), meta_grads(learner, cls_batch())
    loss, metric = learner.episode_step(Episode(sx, sy, qx, qy, kind="classification", n_way=N_WAY))
    assert metric.shape == (B,)
    assert loss.requires_grad
    assert torch.allclose(loss, expected_loss, rtol=0, atol=1e-12)
    learner.zero_grad(set_to_none=True)
    loss.backward()
    for (name, p), e in zip(learner.named_parameters(), expected):
        assert p.grad is not None, name
        assert torch.allclose(p.grad, e, rtol=0, atol=1e-12), name
    assert max(e.abs().max() for e in expected) > 1e-3
    assert torch.equal(sx, cls_batch()[0])  # the caller's tensors are untouched


def test_default_batching_follows_the_backbone():
    assert MAML(kind="regression")._layers is not None  # MLP: all tasks in batched matmuls
    assert MAML(n_way=5)._layers is None  # Conv4: the per-task loop
    assert MAML(n_way=5, batch_tasks=True)._layers is not None
    assert MAML(kind="regression", batch_tasks=False)._layers is None
    assert MAML(kind="regression", compile_query=True)._layers is None


@pytest.mark.slow
def test_compiled_query_pass_matches_eager_in_training_and_eval():
    torch.manual_seed(6)
    eager = small_maml(inner_steps=1, eval_inner_steps=2).float()
    compiled = MAML(**{**eager.hparams, "compile_query": True})
    compiled.load_state_dict(eager.state_dict())
    sx, sy, qx, qy = (t.float() if t.is_floating_point() else t for t in cls_batch())
    for learner in (eager, compiled):
        learner.zero_grad(set_to_none=True)
        meta_loss(learner, (sx, sy, qx, qy)).backward()
    assert compiled._compiled_task_forward is not None
    for (name, a), b in zip(compiled.named_parameters(), eager.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5), name
    with torch.no_grad():
        assert torch.allclose(compiled.eval()(sx, sy, qx), eager.eval()(sx, sy, qx), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="compile_query applies to the per-task loop"):
        MAML(compile_query=True, batch_tasks=True)


def test_compile_query_without_a_compiler_or_with_a_failing_backend_runs_eagerly(monkeypatch):
    """No C++ compiler: one warning and the eager function; a compiled call that fails: one warning, then eager."""
    import rnnmeta.learners.maml as maml_module

    def double(x):
        return 2 * x

    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found"):
        assert maml_module.compiled_or_eager(double) is double

    def broken(x):
        raise RuntimeError("backend unavailable")

    fallback = maml_module._FirstCallFallback(broken, double)
    with pytest.warns(UserWarning, match="torch.compile failed \\(RuntimeError: backend unavailable\\)"):
        assert fallback(torch.ones(2)).tolist() == [2.0, 2.0]
    assert fallback(torch.ones(1)).tolist() == [2.0]  # eager from then on, no second warning


def test_custom_backbone_uses_per_task_loop_and_matches_reference():
    torch.manual_seed(4)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 8), nn.Tanh())
    backbone.out_features = 8
    learner = MAML(backbone=backbone, n_way=N_WAY, inner_lr=0.3).double()
    assert learner._layers is None
    batch = cls_batch()
    ours = torch.autograd.grad(meta_loss(learner, batch), weights(learner))
    _, ref = reference(learner, batch, 1, 0.3)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_meta_sgd_learns_per_parameter_inner_rates():
    torch.manual_seed(5)
    learner = small_maml(learn_inner_lr=True, inner_lr=0.1)
    assert len(learner.inner_lrs) == len(weights(learner))
    params = dict(learner.named_parameters())
    for name, r in learner.inner_lrs.items():
        assert r.shape == params[name.replace("/", ".")].shape and torch.allclose(r, torch.full_like(r, 0.1))
    grads = dict(zip([n for n, _ in learner.named_parameters()], meta_grads(learner, cls_batch())))
    lr_grads = [g for n, g in grads.items() if n.startswith("inner_lrs")]
    assert all(torch.isfinite(g).all() for g in lr_grads)
    assert sum(g.abs().sum() for g in lr_grads) > 0
    # with every rate equal to inner_lr, Meta-SGD is MAML
    plain = small_maml(inner_lr=0.1)
    plain.load_state_dict({k: v for k, v in learner.state_dict().items() if not k.startswith("inner_lrs")})
    assert torch.allclose(meta_loss(plain, cls_batch()), meta_loss(learner, cls_batch()), atol=1e-12)


# ------------------------------------------------------------------ evaluation
def test_eval_uses_eval_inner_steps_and_lr():
    torch.manual_seed(6)
    learner = small_maml(inner_steps=1, inner_lr=0.4, eval_inner_steps=3, eval_inner_lr=0.2).eval()
    sx, sy, qx, _ = cls_batch()
    with torch.no_grad():
        out = learner(sx, sy, qx)
    ref_learner = small_maml(inner_steps=3, inner_lr=0.2)
    ref_learner.load_state_dict(learner.state_dict())
    assert torch.allclose(out, ref_learner(sx, sy, qx), rtol=0, atol=1e-10)
    one = small_maml(inner_steps=1, inner_lr=0.4)
    one.load_state_dict(learner.state_dict())
    assert not torch.allclose(out, one(sx, sy, qx), atol=1e-4)
    zero = small_maml(eval_inner_steps=0)
    zero.load_state_dict(learner.state_dict())
    zero.eval()
    model = nn.Sequential(zero.backbone, zero.head)
    assert torch.allclose(zero(sx, sy, qx), torch.stack([model(qx[t]) for t in range(B)]), atol=1e-12)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_eval_builds_no_graph_and_memory_stays_flat():
    torch.manual_seed(7)
    learner = MAML(backbone=Conv4(1, 8, SIDE), n_way=5, inner_steps=1, eval_inner_steps=3).eval()
    sx, sy = torch.rand(2, 5, 1, SIDE, SIDE), torch.arange(5).repeat(2, 1)
    qx = torch.rand(2, 10, 1, SIDE, SIDE)
    outs = [learner(sx, sy, qx) for _ in range(5)]  # warm up the allocator
    assert all(not o.requires_grad and o.grad_fn is None for o in outs)
    assert all(p.grad is None for p in learner.parameters())
    start = _rss_mib()
    for _ in range(50):
        outs.append(learner(sx, sy, qx))  # keep the outputs alive: a leaked graph would come with them
    assert _rss_mib() - start < 30
    with torch.inference_mode():  # as under Lightning's test loop
        assert not learner(sx, sy, qx).requires_grad


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    "kw,match",
    [
        ({"inner_steps": -1}, "inner_steps"),
        ({"eval_inner_steps": -2}, "eval_inner_steps"),
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"inner_lr": -0.1}, "inner_lr"),
        ({"eval_inner_lr": 0.0}, "eval_inner_lr"),
        ({"learn_inner_lr": True, "eval_inner_lr": 0.1}, "learn_inner_lr"),
        ({"backbone": Conv4(1, 4, SIDE, track_running_stats=True)}, "running statistics"),
        ({"backbone": nn.ReLU()}, "out_features"),
    ],
)
def test_bad_arguments_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        MAML(**kw)


def test_hyperparameters_saved_for_checkpoints():
    learner = MAML(inner_steps=2, eval_inner_steps=5, first_order=True, learn_inner_lr=True)
    hp = learner.hparams
    assert hp.inner_steps == 2 and hp.eval_inner_steps == 5 and hp.first_order and hp.learn_inner_lr
    rebuilt = MAML(**hp)
    rebuilt.load_state_dict(learner.state_dict())


# ------------------------------------------------------------------ learning
@pytest.mark.slow
def test_learns_omniglot_far_above_chance():
    torch.manual_seed(0)
    # measured: 0.80 after these 100 meta-steps (about 10 s on 2 idle cores); chance is 0.2
    learner = MAML(backbone=Conv4(hidden=32, track_running_stats=False), n_way=5, inner_steps=1, inner_lr=0.4,
                   eval_inner_steps=3, optimizer=partial(torch.optim.Adam, lr=3e-3))
    acc = short_omniglot_run(learner, n_way=5, k_shot=1, q_queries=5, meta_batch_size=4, steps=100, test_episodes=100)
    assert acc > 0.6, f"5-way 1-shot test accuracy {acc:.3f} after 100 meta-steps (chance 0.2)"


def test_bad_inputs_name_the_tensor():
    learner = small_maml()
    sx, sy, qx, _ = cls_batch()
    with pytest.raises(ValueError, match="query_x"):
        learner(sx, sy, qx[..., :8])
    with pytest.raises(ValueError, match="support_y"):
        learner(sx, sy + N_WAY, qx)


def reference_support_bn(learner: MAML, batch, steps: int, lr: float, inner_scale: float = 1.0):
    """Per-task MAML whose query pass normalises with the support set's batch statistics, written out by hand.

    The query features are computed layer by layer: every BatchNorm2d normalises the queries with the
    mean and biased variance that the same layer sees on the support set at the adapted weights.
    """
    sx, sy, qx, qy = batch
    model = nn.Sequential(learner.backbone, learner.head)
    total = 0.0
    for t in range(sx.shape[0]):
        fast = dict(model.named_parameters())
        for _ in range(steps):
            inner = F.cross_entropy(functional_call(model, fast, (sx[t],)), sy[t]) * inner_scale
            grads = torch.autograd.grad(inner, list(fast.values()), create_graph=True)
            fast = {n: p - lr * g for (n, p), g in zip(fast.items(), grads)}
        s, q = sx[t], qx[t]
        for i, layer in enumerate(learner.backbone.blocks):  # Conv4: conv, batch norm, ReLU, max-pool x 4
            prefix = f"0.blocks.{i}."
            params = {n[len(prefix):]: p for n, p in fast.items() if n.startswith(prefix)}
            if isinstance(layer, nn.BatchNorm2d):
                mean, var = s.mean((0, 2, 3), keepdim=True), s.var((0, 2, 3), unbiased=False, keepdim=True)
                w, b = params["weight"].view(1, -1, 1, 1), params["bias"].view(1, -1, 1, 1)
                s = (s - mean) / torch.sqrt(var + layer.eps) * w + b
                q = (q - mean) / torch.sqrt(var + layer.eps) * w + b
            else:
                s, q = functional_call(layer, params, (s,)), functional_call(layer, params, (q,))
        logits = F.linear(q.flatten(1), fast["1.weight"], fast["1.bias"])
        total = total + F.cross_entropy(logits, qy[t]) / sx.shape[0]
    return total, list(torch.autograd.grad(total, list(model.parameters())))


def test_support_statistics_query_pass_matches_hand_written_reference_in_float64():
    torch.manual_seed(3)
    learner = small_maml(inner_steps=1, inner_lr=0.3, query_bn="support").train()
    expected_loss, expected = reference_support_bn(learner, cls_batch(), steps=1, lr=0.3)
    assert torch.allclose(meta_loss(learner, cls_batch()), expected_loss, rtol=0, atol=1e-12)
    for got, e in zip(meta_grads(learner, cls_batch()), expected):
        assert torch.allclose(got, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("query_bn, independent", [("transductive", False), ("support", True)])
def test_query_bn_decides_whether_a_query_depends_on_the_other_queries(query_bn, independent):
    torch.manual_seed(0)
    learner = small_maml(query_bn=query_bn).eval()
    sx, sy, qx, _ = cls_batch(m=6)
    other = qx.clone()
    other[:, 1:] = torch.rand_like(other[:, 1:])
    first = learner(sx, sy, qx)[:, 0]
    assert torch.allclose(first, learner(sx, sy, other)[:, 0], atol=1e-12) is independent
    assert torch.allclose(first, learner(sx, sy, qx[:, :1])[:, 0], atol=1e-12) is independent
    assert learner.transductive is not independent
    assert MAML(kind="regression", query_bn="transductive").transductive is False  # no batch norm: nothing to share


def test_support_statistics_training_step_equals_forward_on_the_whole_batch():
    from rnnmeta.episode import Episode

    torch.manual_seed(4)
    learner = small_maml(inner_steps=2, query_bn="support").train()
    sx, sy, qx, qy = cls_batch()
    expected_loss, expected = meta_loss(learner, cls_batch()), meta_grads(learner, cls_batch())
    loss, _ = learner.episode_step(Episode(sx, sy, qx, qy, kind="classification", n_way=N_WAY))
    learner.zero_grad(set_to_none=True)
    loss.backward()
    assert torch.allclose(loss, expected_loss, rtol=0, atol=1e-12)
    for p, e in zip(learner.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=0, atol=1e-12)


def test_sum_over_k_inner_loss_is_the_mean_loss_with_an_n_way_times_larger_step():
    """The authors' scaling (sum over the support set / K) equals the mean loss with inner_lr * N."""
    torch.manual_seed(2)
    summed = small_maml(inner_steps=2, inner_lr=0.1, inner_loss="sum_over_k").train()
    mean = small_maml(inner_steps=2, inner_lr=0.1 * N_WAY, inner_loss="mean").train()
    mean.load_state_dict(summed.state_dict())
    _, expected = reference(summed, cls_batch(), steps=2, lr=0.1 * N_WAY)
    assert torch.allclose(meta_loss(summed, cls_batch()), meta_loss(mean, cls_batch()), rtol=0, atol=1e-12)
    for got, e in zip(meta_grads(summed, cls_batch()), expected):
        assert torch.allclose(got, e, rtol=0, atol=1e-10)
    # regression has one "class": both scalings are the same
    reg = MAML(kind="regression", inner_loss="sum_over_k")
    assert reg._inner_loss_scale() == 1.0 and summed._inner_loss_scale() == N_WAY


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(inner_loss="sum"), "inner_loss must be 'mean' or 'sum_over_k', got 'sum'"),
        (dict(query_bn="running"), "query_bn must be 'transductive' or 'support', got 'running'"),
        (dict(query_bn="support", compile_query=True), "compile_query is not available with query_bn='support'"),
        (dict(query_bn="support", batch_tasks=True), "query_bn='support' runs task by task"),
    ],
)
def test_bad_query_bn_and_inner_loss_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        MAML(n_way=5, **kw)
