"""Tests of the few-shot learner whose inner loop is a learned optimizer."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from rnnmeta.learners.learned_optimizer import LearnedOptimizer
from rnnmeta.nets import MLP, Conv4
from tests.helpers import finite_difference_grad, short_omniglot_run


def _classification_batch(b=2, n=3, k=1, m=4, side=16):
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(b, n * k, 1, side, side, generator=g)
    sy = torch.arange(n).repeat_interleave(k).repeat(b, 1)
    qx = torch.rand(b, m, 1, side, side, generator=g)
    return sx, sy, qx


def _regression_batch(b=2, s=5, m=6, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    sx = torch.rand(b, s, 1, generator=g, dtype=dtype) * 10 - 5
    qx = torch.rand(b, m, 1, generator=g, dtype=dtype) * 10 - 5
    amp = torch.rand(b, 1, 1, generator=g, dtype=dtype) * 4 + 1
    return sx, amp * torch.sin(sx), qx, amp * torch.sin(qx)


@pytest.mark.parametrize("rule", ["ravi_larochelle", "lstm"])
def test_shapes_and_meta_gradient_reach_init_and_rule(rule):
    learner = LearnedOptimizer(n_way=3, backbone=Conv4(hidden=8, image_size=16), update_rule=rule, inner_steps=2)
    sx, sy, qx = _classification_batch()
    preds = learner(sx, sy, qx)
    assert preds.shape == (2, 4, 3)
    preds.logsumexp(-1).sum().backward()
    assert learner.head.weight.grad is not None and learner.head.weight.grad.abs().sum() > 0
    assert learner.backbone.blocks[0].weight.grad.abs().sum() > 0
    if rule == "ravi_larochelle":
        assert learner.update_rule.input_bias.grad.abs() > 0
    else:  # the zero read-out gets a gradient on the first meta-step
        assert learner.update_rule.readout.weight.grad.abs().sum() > 0
    names = [n for n, _ in learner.named_parameters()] + list(learner.state_dict())
    assert not any("hidden" in n.split(".")[-1] or "gate" == n.split(".")[-1] for n in names)


def test_regression_default_backbone_and_eval_leaves_no_graph():
    learner = LearnedOptimizer(kind="regression", inner_steps=3)
    assert isinstance(learner.backbone, MLP)
    sx, sy, qx, _ = _regression_batch()
    learner.eval()
    preds = learner(sx, sy, qx)
    assert preds.shape == (2, 6, 1) and not preds.requires_grad
    assert all(p.grad is None for p in learner.parameters())
    with torch.no_grad():
        again = learner(sx, sy, qx)
    with torch.inference_mode():
        inferred = learner(sx, sy, qx)
    torch.testing.assert_close(again, preds)
    torch.testing.assert_close(inferred.clone(), preds)
    # adaptation really happened: predictions differ from the unadapted network
    with torch.no_grad():
        unadapted = learner.head(learner.backbone(qx))
    assert (unadapted - preds).abs().max() > 1e-4


def test_forced_sgd_rule_matches_a_hand_written_sgd_inner_loop():
    torch.manual_seed(0)
    lr, steps = 0.05, 4
    learner = LearnedOptimizer(kind="regression", backbone=MLP(1, [8]), inner_steps=steps).double()
    learner.update_rule.fixed_input_gate, learner.update_rule.fixed_forget_gate = lr, 1.0
    sx, sy, qx, _ = _regression_batch(dtype=torch.float64)
    preds = learner(sx, sy, qx)
    for b in range(2):
        net = nn.Sequential(learner.backbone, learner.head)
        params = [p.detach().clone().requires_grad_() for p in net.parameters()]
        names = [n for n, _ in net.named_parameters()]
        for _ in range(steps):
            out = torch.func.functional_call(net, dict(zip(names, params)), (sx[b],))
            grads = torch.autograd.grad((out - sy[b]).pow(2).mean(), params)
            params = [(p - lr * g).detach().requires_grad_() for p, g in zip(params, grads)]
        expected = torch.func.functional_call(net, dict(zip(names, params)), (qx[b],))
        torch.testing.assert_close(preds[b].detach(), expected.detach(), rtol=0, atol=1e-10)


def _fixed_grad_query_loss(learner, sx, sy, qx, qy, recorded):
    """Query loss as a function of (theta_0, phi) with every support gradient and loss held fixed."""
    total = 0.0
    for b in range(sx.shape[0]):
        params = [p for _, p in learner.base_parameters()]
        state = learner.update_rule.init(params)
        for grads, loss in recorded[b]:
            updates, state = learner.update_rule.update(grads, state, params, loss)
            params = [p + u for p, u in zip(params, updates)]
        total = total + (learner.base_forward(params, qx[b]) - qy[b]).pow(2).mean()
    return total / sx.shape[0]


@pytest.mark.parametrize("rule", ["ravi_larochelle", "lstm"])
def test_first_order_meta_gradient_matches_finite_differences(rule):
    torch.manual_seed(0)
    learner = LearnedOptimizer(
        kind="regression", backbone=MLP(1, [3]), update_rule=rule, inner_steps=3, lstm_hidden=2, lstm_layers=1
    ).double()
    with torch.no_grad():
        for p in learner.update_rule.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    sx, sy, qx, qy = _regression_batch(dtype=torch.float64)
    loss = learner.task_losses(learner(sx, sy, qx), qy).mean()
    params = list(learner.parameters())
    autograd = torch.autograd.grad(loss, params)
    # record the support gradients and losses of the trajectory at the current meta-parameters
    recorded = []
    for b in range(2):
        steps, theta = [], [p.detach().requires_grad_() for _, p in learner.base_parameters()]
        state = learner.update_rule.init(theta)
        for _ in range(3):
            inner = (learner.base_forward(theta, sx[b]) - sy[b]).pow(2).mean()
            grads = list(torch.autograd.grad(inner, theta))
            steps.append((grads, inner.detach()))
            with torch.no_grad():
                updates, state = learner.update_rule.update(grads, state, theta, inner.detach())
                theta = [(p + u).requires_grad_() for p, u in zip(theta, updates)]
        recorded.append(steps)
    with torch.no_grad():
        torch.testing.assert_close(_fixed_grad_query_loss(learner, sx, sy, qx, qy, recorded), loss.detach())
        fd = finite_difference_grad(lambda: _fixed_grad_query_loss(learner, sx, sy, qx, qy, recorded), params, 1e-6)
    for (name, _), a, f in zip(learner.named_parameters(), autograd, fd):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-8, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("adapted,batch_tasks", [("all", True), ("head", False), ("head", True)])
def test_second_order_meta_gradient_matches_finite_differences(adapted, batch_tasks):
    """Every parameter's meta-gradient against central differences, float64. With ``adapted="head"`` the backbone's
    gradient also flows through the support features the head was trained on."""
    torch.manual_seed(1)
    learner = LearnedOptimizer(kind="regression", backbone=MLP(1, [3]), inner_steps=2, second_order=True,
                               adapted=adapted, batch_tasks=batch_tasks).double()
    sx, sy, qx, qy = _regression_batch(dtype=torch.float64)
    params = list(learner.parameters())

    def query_loss():
        with torch.enable_grad():
            return learner.task_losses(learner(sx, sy, qx), qy).mean()

    autograd = torch.autograd.grad(query_loss(), params)
    fd = finite_difference_grad(lambda: query_loss().detach(), params, 1e-6)
    for (name, _), a, f in zip(learner.named_parameters(), autograd, fd):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-8, msg=lambda m: f"{name}: {m}")
    assert float(autograd[0].abs().sum()) > 0  # the backbone's first weight


@pytest.mark.parametrize("rule,second_order", [("ravi_larochelle", False), ("lstm", False), ("ravi_larochelle", True)])
def test_batched_inner_loop_equals_the_per_task_reference(rule, second_order):
    """All tasks at once (vmap over tasks) gives the per-task loop's predictions and meta-gradients."""
    sx, sy, qx, qy = _regression_batch(b=3, dtype=torch.float64)
    results = []
    for batch_tasks in (False, True):
        torch.manual_seed(0)
        learner = LearnedOptimizer(
            kind="regression", backbone=MLP(1, [6, 5]), update_rule=rule, inner_steps=3, lstm_hidden=4,
            second_order=second_order, batch_tasks=batch_tasks,
        ).double()
        with torch.no_grad():
            for p in learner.update_rule.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        assert learner.runs_tasks_batched() == batch_tasks
        preds = learner(sx, sy, qx)
        grads = torch.autograd.grad(learner.task_losses(preds, qy).mean(), list(learner.parameters()))
        learner.eval()
        evaluated = learner(sx, sy, qx)
        results.append((preds.detach(), grads, evaluated))
    (p0, g0, e0), (p1, g1, e1) = results
    torch.testing.assert_close(p1, p0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e1, e0, rtol=1e-12, atol=1e-12)
    assert not e1.requires_grad
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert max(float(g.abs().max()) for g in g0) > 1e-3
    # the tasks really differ, so a mix-up between them would show
    assert (p0[0] - p0[1]).abs().max() > 1e-3


def test_batch_norm_backbone_runs_tasks_one_by_one():
    learner = LearnedOptimizer(n_way=3, backbone=Conv4(hidden=4, image_size=16))
    assert learner.batch_tasks and not learner.runs_tasks_batched()


def test_backbone_with_running_batch_norm_statistics_is_refused():
    """As MAML: the inner loop normalises with each task's batch statistics, never pooled running ones."""
    with pytest.raises(ValueError, match=r"backbone\.blocks\.1 tracks running statistics.*track_running_stats=False"):
        LearnedOptimizer(n_way=3, backbone=Conv4(hidden=4, image_size=16, track_running_stats=True))
    nested = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.BatchNorm1d(8))
    nested.out_features = 8
    with pytest.raises(ValueError, match=r"backbone\.2 tracks running statistics"):
        LearnedOptimizer(n_way=3, backbone=nested)
    nested[2] = nn.BatchNorm1d(8, track_running_stats=False)
    LearnedOptimizer(n_way=3, backbone=nested)  # per-batch statistics are fine
    LearnedOptimizer(n_way=3)  # and so is the default Conv4
    LearnedOptimizer(n_way=3, backbone={"class_path": "rnnmeta.nets.Conv4", "init_args": {"hidden": 4, "image_size": 16}})
    with pytest.raises(ValueError, match="tracks running statistics"):
        LearnedOptimizer(n_way=3, backbone={"class_path": "rnnmeta.nets.Conv4",
                                            "init_args": {"hidden": 4, "image_size": 16, "track_running_stats": True}})


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="update_rule"):
        LearnedOptimizer(update_rule="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inner_steps"):
        LearnedOptimizer(inner_steps=0)
    with pytest.raises(ValueError, match=r"adapted must be 'all' .* or 'head' .*, got 'backbone'"):
        LearnedOptimizer(adapted="backbone")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="out_features"):
        LearnedOptimizer(backbone=nn.Tanh())
    learner = LearnedOptimizer(n_way=3, backbone=Conv4(hidden=4, image_size=16))
    sx, sy, qx = _classification_batch()
    with pytest.raises(ValueError, match="query_x"):
        learner(sx, sy, qx[:, :, :, :8])


@pytest.mark.slow
def test_learns_omniglot_far_above_chance(one_thread):
    torch.manual_seed(0)
    learner = LearnedOptimizer(backbone=Conv4(hidden=16), inner_steps=1, init_inner_lr=0.3, optimizer=partial(torch.optim.Adam, lr=3e-3))
    # measured after these 300 meta-steps (one thread, AMD EPYC with AVX2): 0.732 (seed 0) and 0.716 (seed 1)
    # in 30 CPU-s; with Conv4-32, 0.597 in 54 CPU-s (docs/LEARNED_OPTIMIZER.md). Chance is 0.2.
    acc = short_omniglot_run(learner, n_way=5, k_shot=1, q_queries=5, meta_batch_size=4, steps=300, test_episodes=100)
    assert acc > 0.5, f"5-way 1-shot test accuracy {acc:.3f} after 300 meta-steps (chance 0.2)"


def _perturbed_learner(seed: int, **kwargs) -> LearnedOptimizer:
    torch.manual_seed(seed)
    learner = LearnedOptimizer(kind="regression", backbone=MLP(1, [6, 5]), inner_steps=3, lstm_hidden=4, **kwargs).double()
    with torch.no_grad():
        for p in learner.update_rule.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return learner


@pytest.mark.parametrize("rule", ["ravi_larochelle", "lstm"])
@pytest.mark.parametrize("batch_tasks", [False, True])
def test_head_only_inner_loop_equals_the_full_loop_over_a_frozen_backbone(rule, batch_tasks):
    """``adapted="head"`` trains the head on features computed once; the full inner loop with the backbone's
    weights frozen trains the same head on the same features, so predictions and the rule's and head's
    meta-gradients agree; only the head-only learner meta-learns its backbone (through the queries)."""
    sx, sy, qx, qy = _regression_batch(b=3, dtype=torch.float64)
    head_only = _perturbed_learner(0, update_rule=rule, batch_tasks=batch_tasks, adapted="head")
    frozen = _perturbed_learner(0, update_rule=rule, batch_tasks=batch_tasks)
    frozen.backbone.requires_grad_(False)
    assert [n for n, _ in head_only.base_parameters()] == ["head.weight", "head.bias"] == [n for n, _ in frozen.base_parameters()]
    preds = [learner(sx, sy, qx) for learner in (head_only, frozen)]
    torch.testing.assert_close(preds[0], preds[1], rtol=1e-12, atol=1e-12)
    for learner, p in zip((head_only, frozen), preds):
        learner.task_losses(p, qy).mean().backward()
    for name, p in frozen.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(dict(head_only.named_parameters())[name].grad, p.grad, rtol=1e-10, atol=1e-12)
    assert all(float(p.grad.abs().sum()) > 0 for p in head_only.backbone.parameters())
    for learner in (head_only, frozen):
        learner.eval()
    torch.testing.assert_close(head_only(sx, sy, qx), frozen(sx, sy, qx), rtol=1e-12, atol=1e-12)
    # the head really adapted: the unadapted head answers otherwise
    with torch.no_grad():
        assert (head_only.head(head_only.backbone(qx)) - head_only(sx, sy, qx)).abs().max() > 1e-4


def test_head_only_with_batch_norm_reads_each_tasks_statistics():
    """With a batch-norm backbone the tasks run one by one in both modes, and the head-only learner's features
    are those of the full learner with the backbone frozen (per-task statistics, queries as ``query_bn`` says)."""
    sx, sy, qx = _classification_batch(b=2, n=3, k=2, m=4)
    for query_bn in ("transductive", "support"):
        torch.manual_seed(0)
        head_only = LearnedOptimizer(n_way=3, backbone=Conv4(hidden=4, image_size=16), adapted="head", query_bn=query_bn).double()
        torch.manual_seed(0)
        frozen = LearnedOptimizer(n_way=3, backbone=Conv4(hidden=4, image_size=16), query_bn=query_bn).double()
        frozen.backbone.requires_grad_(False)
        assert not head_only.runs_tasks_batched()
        torch.testing.assert_close(head_only(sx.double(), sy, qx.double()), frozen(sx.double(), sy, qx.double()),
                                   rtol=1e-10, atol=1e-12)
