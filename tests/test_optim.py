"""Tests of rnnmeta.optim: the learned update rules, their meta-gradients, the drop-in optimizer."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from rnnmeta.optim import (
    CoordinatewiseLSTMOptimizer,
    LSTMOptimizer,
    QuadraticFamily,
    RaviLarochelleUpdate,
    apply_updates,
    load_meta_optimizer,
    meta_train,
    preprocess_gradients,
    rollout,
    unroll,
)
from rnnmeta.optim.tasks import OmniglotMLPFamily, default_omniglot_root
from tests.helpers import finite_difference_grad


def _randomise(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Give every parameter random values (the LSTM's read-out starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


# ----------------------------------------------------------------------------- preprocessing
def test_preprocess_gradients_matches_paper_formula():
    p = 10.0
    g = torch.tensor([1.0, -0.5, 1e-3, -2e-5, 1e-6, -3e-7, 0.0], dtype=torch.float64)
    out = preprocess_gradients(g, p)
    assert out.shape == (7, 2)
    for gi, (a, b) in zip(g.tolist(), out.tolist()):
        if abs(gi) >= math.exp(-p):
            assert a == pytest.approx(math.log(abs(gi)) / p) and b == pytest.approx(math.copysign(1.0, gi))
        else:
            assert a == -1.0 and b == pytest.approx(math.exp(p) * gi)
    # the unused log branch must not poison gradients with inf/nan
    gg = g.clone().requires_grad_()
    preprocess_gradients(gg, p).sum().backward()
    assert torch.isfinite(gg.grad).all()
    with pytest.raises(ValueError, match="p must be > 0"):
        preprocess_gradients(g, 0.0)


# ----------------------------------------------------------------------------- Ravi & Larochelle
def _tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_ravi_larochelle_with_f1_i_lr_is_sgd_functional_and_drop_in():
    lr, steps = 0.05, 6
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    ref = _tiny_model()
    drop_in = copy.deepcopy(ref)
    functional = [p.detach().clone().requires_grad_() for p in ref.parameters()]
    sgd = torch.optim.SGD(ref.parameters(), lr=lr)
    lstm_opt = LSTMOptimizer(drop_in.parameters(), RaviLarochelleUpdate.sgd(lr))
    rule = RaviLarochelleUpdate.sgd(lr)
    state = rule.init(functional)
    names = [n for n, _ in ref.named_parameters()]
    for _ in range(steps):
        for model, opt in ((ref, sgd), (drop_in, lstm_opt)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        loss = nn.functional.mse_loss(torch.func.functional_call(ref, dict(zip(names, functional)), (x,)), y)
        grads = torch.autograd.grad(loss, functional)
        with torch.no_grad():
            updates, state = rule.update(list(grads), state, functional, loss)
            functional = [(p + u).requires_grad_() for p, u in zip(functional, updates)]
        for a, b, c in zip(ref.parameters(), drop_in.parameters(), functional):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
            torch.testing.assert_close(c.detach(), a.detach(), rtol=0, atol=1e-6)
    # the trajectory really moved (so the comparison could have failed)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(ref.parameters(), _tiny_model().parameters()))


def test_ravi_larochelle_learned_gates_follow_the_lstm_cell_equation():
    rule = _randomise(RaviLarochelleUpdate(), seed=3).double()
    theta = [torch.randn(5, dtype=torch.float64)]
    grad = [torch.randn(5, dtype=torch.float64)]
    state = rule.init(theta)
    loss = torch.tensor(0.7, dtype=torch.float64)
    (upd,), new = rule.update(grad, state, theta, loss)
    feats = torch.cat(
        [preprocess_gradients(grad[0]), preprocess_gradients(loss).expand(5, 2), theta[0][:, None]], dim=1
    )
    i = torch.sigmoid(feats @ rule.input_weight[:5] + state.input_gate * rule.input_weight[5] + rule.input_bias)
    f = torch.sigmoid(feats @ rule.forget_weight[:5] + state.forget_gate * rule.forget_weight[5] + rule.forget_bias)
    torch.testing.assert_close(theta[0] + upd, f * theta[0] - i * grad[0])
    torch.testing.assert_close(new.input_gate, i)
    torch.testing.assert_close(new.forget_gate, f)
    with pytest.raises(ValueError, match="needs params"):
        rule.update(grad, state, None, loss)


def test_ravi_larochelle_reads_one_loss_per_coordinate():
    rule = _randomise(RaviLarochelleUpdate(), seed=7, scale=0.5).double()
    theta = [torch.randn(2, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    grads = [torch.randn_like(t) for t in theta]
    state = rule.init(theta)
    scalar, _ = rule.update(grads, state, theta, torch.tensor(0.7, dtype=torch.float64))
    constant, _ = rule.update(grads, state, theta, torch.full((10,), 0.7, dtype=torch.float64))
    for a, b in zip(scalar, constant):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # two learners in one call, each coordinate reading its own learner's loss
    losses = torch.cat([torch.full((6,), 0.3, dtype=torch.float64), torch.full((4,), 2.0, dtype=torch.float64)])
    joined, _ = rule.update(grads, state, theta, losses)
    for i, loss in ((0, 0.3), (1, 2.0)):
        (alone,), _ = rule.update([grads[i]], rule.init([theta[i]]), [theta[i]], torch.tensor(loss, dtype=torch.float64))
        torch.testing.assert_close(joined[i], alone, rtol=1e-14, atol=1e-15)
    assert (joined[0] - scalar[0]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="one value per coordinate"):
        rule.update(grads, state, theta, torch.zeros(5, dtype=torch.float64))


# ----------------------------------------------------------------------------- state lives outside
@pytest.mark.parametrize("make", [CoordinatewiseLSTMOptimizer, RaviLarochelleUpdate])
def test_optimizer_state_is_not_a_parameter_and_update_is_pure(make):
    rule = make()
    params = [torch.randn(3, 4), torch.randn(5)]
    state = rule.init(params)
    state_tensors = list(vars(state).values())
    owned = list(rule.parameters()) + list(rule.buffers()) + list(rule.state_dict().values())
    ptrs = {t.data_ptr() for t in owned}
    assert all(t.data_ptr() not in ptrs for t in state_tensors)
    assert all(not t.requires_grad for t in state_tensors)
    before = copy.deepcopy(state)
    grads = [torch.randn_like(p) for p in params]
    updates, new_state = rule.update(grads, state, params, torch.tensor(1.0))
    assert [u.shape for u in updates] == [p.shape for p in params]
    for k, v in vars(before).items():
        assert torch.equal(getattr(state, k), v), f"update modified the old state's {k}"
    if make is CoordinatewiseLSTMOptimizer:
        assert not torch.equal(new_state.hidden, state.hidden)
    with pytest.raises(ValueError, match="coordinates"):
        rule.update([torch.randn(7)], state, [torch.randn(7)])


def test_meta_training_updates_only_the_module_parameters_not_the_state():
    rule = CoordinatewiseLSTMOptimizer(hidden_size=4)
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    family = QuadraticFamily(dim=3, batch_size=4)
    task = family.sample(torch.Generator().manual_seed(0))
    params = [p.requires_grad_() for p in task.init_params()]
    state = rule.init(params)
    state_copy = copy.deepcopy(state)
    adam = torch.optim.Adam(rule.parameters(), lr=1e-2)
    tracked = {id(p) for group in adam.param_groups for p in group["params"]}
    assert tracked == {id(p) for p in rule.parameters()}
    objective, _, new_state = unroll(rule, task, params, state, steps=5)
    objective.backward()
    adam.step()
    # the initial state was neither a leaf with a gradient nor changed by the meta-optimiser
    for k in vars(state):
        assert getattr(state, k).grad is None
        assert torch.equal(getattr(state, k), getattr(state_copy, k))
    assert set(rule.state_dict()) == set(before)
    assert any(not torch.equal(rule.state_dict()[k], before[k]) for k in before)


# ----------------------------------------------------------------------------- meta-gradients
def _fixed_gradient_objective(rule, task, theta0, grads, losses, steps):
    """sum_{t=1..T} mean f(theta_t) with the optimizee's gradients and losses held at given values."""
    params = [p.detach() for p in theta0]
    state = rule.init(params)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(steps):
        updates, state = rule.update([grads[t]], state, params, losses[t])
        params = apply_updates(params, updates)
        total = total + task.losses(params).mean()
    return total


@pytest.mark.parametrize("make", [lambda: CoordinatewiseLSTMOptimizer(hidden_size=3), RaviLarochelleUpdate])
def test_first_order_meta_gradient_matches_finite_differences(make):
    """FO objective: the unrolled loss as a function of phi with grad_t (and loss_t) held fixed."""
    torch.manual_seed(0)
    rule = _randomise(make(), seed=1, scale=0.3).double()
    task = QuadraticFamily(dim=2, batch_size=2, init_std=0.5, dtype=torch.float64).sample(torch.Generator().manual_seed(1))
    steps = 4
    theta0 = [p.requires_grad_() for p in task.init_params()]
    objective, _, _ = unroll(rule, task, theta0, rule.init(theta0), steps, second_order=False)
    meta_params = list(rule.parameters())
    autograd = torch.autograd.grad(objective, meta_params)
    # record the trajectory's gradients and losses at phi_0
    grads, losses, params, state = [], [], [p.detach().requires_grad_() for p in theta0], rule.init(theta0)
    for _ in range(steps):
        loss = task.losses(params)
        (g,) = torch.autograd.grad(loss.sum(), params)
        grads.append(g)
        losses.append(loss.mean().detach())
        with torch.no_grad():
            updates, state = rule.update([g], state, params, losses[-1])
            params = [(p + u).requires_grad_() for p, u in zip(params, updates)]
    with torch.no_grad():
        reference = _fixed_gradient_objective(rule, task, theta0, grads, losses, steps)
        torch.testing.assert_close(reference, objective.detach())
        fd = finite_difference_grad(lambda: _fixed_gradient_objective(rule, task, theta0, grads, losses, steps), meta_params, 1e-6)
    for a, f in zip(autograd, fd):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-7)
    assert max(float(a.abs().max()) for a in autograd) > 1e-3


def test_second_order_meta_gradient_matches_finite_differences_of_the_true_unroll():
    rule = _randomise(RaviLarochelleUpdate(), seed=2, scale=0.3).double()
    task = QuadraticFamily(dim=2, batch_size=2, init_std=0.5, dtype=torch.float64).sample(torch.Generator().manual_seed(2))
    theta0 = [p.requires_grad_() for p in task.init_params()]

    def true_objective():
        with torch.enable_grad():
            params = [p.detach().requires_grad_() for p in theta0]
            return unroll(rule, task, params, rule.init(params), 3, second_order=True)[0].detach()

    objective, _, _ = unroll(rule, task, theta0, rule.init(theta0), 3, second_order=True)
    autograd = torch.autograd.grad(objective, list(rule.parameters()))
    fd = finite_difference_grad(true_objective, list(rule.parameters()), 1e-6)
    for a, f in zip(autograd, fd):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-7)
    first, _, _ = unroll(rule, task, theta0, rule.init(theta0), 3, second_order=False)
    fo = torch.autograd.grad(first, list(rule.parameters()))
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(autograd, fo)), "second order should differ from first order"


# ----------------------------------------------------------------------------- drop-in optimizer
def test_checkpoint_round_trip_with_weights_only(tmp_path):
    rule = _randomise(CoordinatewiseLSTMOptimizer(hidden_size=5, learn_output_scale=True), seed=4)
    path = rule.save(tmp_path / "opt.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["class"] == "CoordinatewiseLSTMOptimizer"
    loaded = load_meta_optimizer(path)
    assert isinstance(loaded, CoordinatewiseLSTMOptimizer) and loaded.hidden_size == 5
    for (ka, a), (kb, b) in zip(rule.state_dict().items(), loaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a learned-optimizer checkpoint"):
        load_meta_optimizer(tmp_path / "other.pt")


def test_lstm_optimizer_state_dict_resumes_the_same_trajectory(tmp_path):
    rule = _randomise(CoordinatewiseLSTMOptimizer(hidden_size=4), seed=5, scale=0.2)
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    a, b = _tiny_model(), _tiny_model()
    opt_a, opt_b = LSTMOptimizer(a.parameters(), rule), LSTMOptimizer(b.parameters(), rule)

    def step(model, opt):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step(a, opt_a)
        step(b, opt_b)
    saved = opt_b.state_dict()
    torch.save(saved, tmp_path / "s.pt")
    opt_c = LSTMOptimizer(b.parameters(), rule)
    opt_c.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    step(a, opt_a)
    step(b, opt_c)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)
    assert set(opt_c.state[next(iter(b.parameters()))]) == {"step", "hidden", "cell"}


@pytest.mark.parametrize("make", [lambda: CoordinatewiseLSTMOptimizer(hidden_size=4), RaviLarochelleUpdate])
def test_drop_in_step_updates_all_parameters_in_one_call_like_one_call_each(make):
    """The drop-in optimizer joins every parameter into one rule call: the same as a call per tensor."""
    rule = _randomise(make(), seed=6, scale=0.3).double()
    model = _tiny_model(3).double()
    reference = [p.detach().clone() for p in model.parameters()]
    states = [rule.init([p]) for p in reference]
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    opt = LSTMOptimizer(model.parameters(), rule)
    calls = []
    original = rule.update

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    rule.update = counting
    names = [n for n, _ in model.named_parameters()]
    for _ in range(3):
        def closure():
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
        ref_params = [p.requires_grad_() for p in reference]
        loss = nn.functional.mse_loss(torch.func.functional_call(model, dict(zip(names, ref_params)), (x,)), y)
        grads = torch.autograd.grad(loss, ref_params)
        with torch.no_grad():
            new = []
            for i, (p, g) in enumerate(zip(ref_params, grads)):
                (u,), states[i] = original([g], states[i], [p.detach()], loss.detach())
                new.append(p.detach() + u)
        reference = new
        for a, b in zip(model.parameters(), reference):
            torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)
    assert len(calls) == 3  # one rule call per step for the 4 parameter tensors
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(model.parameters(), _tiny_model(3).double().parameters()))


def test_drop_in_optimizer_from_sgd_like_checkpoint_trains_a_fresh_model(tmp_path):
    path = RaviLarochelleUpdate.sgd(0.1).save(tmp_path / "sgd_like.pt")
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.randn(4, 3)
    model = _tiny_model(1)
    opt = LSTMOptimizer.from_checkpoint(model.parameters(), path)
    first = nn.functional.mse_loss(model(x), y).item()
    for _ in range(100):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_briefly_meta_trained_lstm_lowers_loss_and_trains_a_fresh_model(tmp_path):
    torch.manual_seed(0)
    rule = CoordinatewiseLSTMOptimizer()
    family = QuadraticFamily(batch_size=16)
    held_out = QuadraticFamily(batch_size=64).sample(torch.Generator().manual_seed(99))
    untrained = rollout(held_out, 40, meta_optimizer=rule)
    assert untrained[-1] == pytest.approx(untrained[0])  # zero read-out: no movement before training
    result = meta_train(rule, family, iterations=6, unroll_steps=40, truncation=20, meta_lr=3e-3, checkpoint=tmp_path / "q.pt")
    assert len(result.objectives) == 6 and result.checkpoint is not None
    trained = rollout(held_out, 40, meta_optimizer=rule)
    assert trained[-1] < 0.5 * trained[0]
    # drop-in on a fresh model, loaded from the checkpoint the user keeps
    x = torch.randn(64, 4)
    y = x @ torch.randn(4, 3)
    model = _tiny_model(2)
    opt = LSTMOptimizer.from_checkpoint(model.parameters(), result.checkpoint)
    first = nn.functional.mse_loss(model(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_meta_train_keeps_the_weights_with_the_best_validation_score(tmp_path):
    torch.manual_seed(0)
    rule = CoordinatewiseLSTMOptimizer(hidden_size=4)
    family = QuadraticFamily(dim=3, batch_size=4)
    seen, lines = [], []
    scores = iter([3.0, 1.0, 2.0])

    def validate(r):
        seen.append({k: v.clone() for k, v in r.state_dict().items()})
        return next(scores)

    result = meta_train(
        rule, family, iterations=6, unroll_steps=4, truncation=2, meta_lr=1e-2,
        validate=validate, validate_every=2, checkpoint=tmp_path / "best.pt", log_every=3, log=lines.append,
    )
    assert result.validation == [(2, 3.0), (4, 1.0), (6, 2.0)]
    assert result.best_iteration == 4
    # the weights moved after the best validation, so keeping them is observable
    assert not torch.equal(seen[1]["readout.weight"], seen[2]["readout.weight"])
    for k, v in rule.state_dict().items():
        assert torch.equal(v, seen[1][k]), k
    for k, v in load_meta_optimizer(result.checkpoint).state_dict().items():
        assert torch.equal(v, seen[1][k]), k
    assert sum("s/task" in line for line in lines) == 2 and sum("validation" in line for line in lines) == 3
    with pytest.raises(ValueError, match="validate"):
        meta_train(rule, family, iterations=1, unroll_steps=2, truncation=2, validate_every=2)


def test_meta_train_without_periodic_validation_keeps_the_last_weights():
    family = QuadraticFamily(dim=3, batch_size=4)
    runs = []
    for validate in (None, lambda r: 0.5):
        torch.manual_seed(0)
        rule = CoordinatewiseLSTMOptimizer(hidden_size=4)
        runs.append((rule, meta_train(rule, family, iterations=3, unroll_steps=4, truncation=2, meta_lr=1e-2, validate=validate)))
    (plain, plain_result), (validated, validated_result) = runs
    assert plain_result.validation == [] and plain_result.best_iteration is None
    assert validated_result.validation == [(3, 0.5)] and validated_result.best_iteration == 3
    for (k, a), b in zip(plain.state_dict().items(), validated.state_dict().values()):
        assert torch.equal(a, b), k


# ----------------------------------------------------------------------------- tasks
def test_quadratic_batch_functions_are_independent():
    task = QuadraticFamily(dim=4, batch_size=3).sample(torch.Generator().manual_seed(0))
    (x,) = [p.requires_grad_() for p in task.init_params()]
    losses = task.losses([x])
    assert losses.shape == (3,)
    (g,) = torch.autograd.grad(losses.sum(), [x])
    (g0,) = torch.autograd.grad(task.losses([x])[0], [x])
    torch.testing.assert_close(g[0], g0[0])
    assert torch.all(g0[1:] == 0)
    assert (task.minimum() <= losses.detach() + 1e-5).all()


def test_omniglot_mlp_task_shapes_and_minibatches():
    root = default_omniglot_root()
    if root is None:
        pytest.skip("Omniglot zips not found next to the repository")
    family = OmniglotMLPFamily(root, max_classes=20)
    task = family.sample(torch.Generator().manual_seed(0))
    params = task.init_params()
    assert [tuple(p.shape) for p in params] == [(196, 20), (20,), (20, 10), (10,)]
    assert task.losses(params, 0).shape == (1,)
    assert not torch.equal(task.minibatch(0)[0], task.minibatch(1)[0])
    assert torch.equal(task.minibatch(3)[0], task.minibatch(3)[0])
    assert 0 < float(family.pool.mean()) < 0.5  # ink is 1 on a mostly empty page
    curve = rollout(task, 30, torch_optimizer=lambda p: torch.optim.Adam(p, lr=1e-2))
    assert curve[-1] < curve[0]
