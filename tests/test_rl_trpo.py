"""TRPO (rnnmeta.rl.trpo) against first principles, as MAML-RL's outer step, and as the memory agents' optimiser."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.rl import RL2, TRPO, BernoulliBandits, SNAILAgent
from rnnmeta.rl.maml_rl import MAMLRL
from rnnmeta.rl.navigation import PointNavigation2D
from rnnmeta.rl.trpo import conjugate_gradient

torch.set_num_threads(1)


def test_conjugate_gradient_solves_a_positive_definite_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(8, 8, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=8)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-7, atol=1e-9)
    # fewer iterations than dimensions: an approximation, closer with each iteration
    errors = [float((conjugate_gradient(lambda v: a @ v, b, iters=k) - torch.linalg.solve(a, b)).norm()) for k in (2, 4, 8)]
    assert errors[0] > errors[1] > errors[2]


def test_action_kl_matches_torch_distributions():
    from torch.distributions import Categorical, Normal, kl_divergence

    from rnnmeta.rl.agent import action_kl
    from rnnmeta.rl.base import Box, Discrete

    g = torch.Generator().manual_seed(2)
    old, new = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    old_log_std, new_log_std = torch.randn(3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(old, old_log_std.exp()), Normal(new, new_log_std.exp())).sum(-1)
    torch.testing.assert_close(action_kl(Box((3,), -1.0, 1.0), old, new, old_log_std, new_log_std), expected)
    expected = kl_divergence(Categorical(logits=old), Categorical(logits=new))
    torch.testing.assert_close(action_kl(Discrete(3), old, new), expected)


def _categorical_problem(max_kl: float):
    """A softmax policy over 5 actions with logits ``theta``, the loss ``-E_p[r]`` and ``KL(p_start || p_theta)``."""
    g = torch.Generator().manual_seed(1)
    theta = torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))
    reward = torch.randn(5, generator=g, dtype=torch.float64)
    start = theta.detach().softmax(-1)

    def closure():
        logp = theta.log_softmax(-1)
        return -(logp.exp() * reward).sum(), (start * (start.log() - logp)).sum()

    return theta, reward, start, closure, TRPO([theta], max_kl=max_kl, damping=0.0)


def test_trpo_steps_along_the_natural_gradient_to_the_kl_bound():
    """The step is ``F^+ (-g)`` (``F = diag(p) - p p^T``, the softmax's Fisher matrix) scaled to the KL bound."""
    max_kl = 1e-3
    theta, reward, p, closure, optimizer = _categorical_problem(max_kl)
    before = theta.detach().clone()
    loss_before = float(closure()[0].detach())
    optimizer.step(closure)
    step = theta.detach() - before
    fisher = torch.diag(p) - torch.outer(p, p)
    grad = -(p * (reward - (p * reward).sum()))  # d(-E_p[r]) / d theta
    natural = torch.linalg.pinv(fisher) @ -grad
    assert torch.nn.functional.cosine_similarity(step, natural, dim=0) > 1 - 1e-9
    expected = (2 * max_kl / (natural @ fisher @ natural)) ** 0.5 * natural  # the full step of the quadratic model
    assert optimizer.last_step["accepted"] == 1.0
    torch.testing.assert_close(step, optimizer.last_step["step_fraction"] * expected, rtol=1e-6, atol=1e-12)
    assert 0.5 * max_kl < optimizer.last_step["kl"] <= max_kl
    assert optimizer.last_step["loss_after"] < loss_before and float(closure()[0].detach()) == pytest.approx(optimizer.last_step["loss_after"])


def test_trpo_rejects_a_step_that_never_improves_the_loss_and_stays_put():
    """A loss whose first-order model promises a gain that no step size delivers: every try fails, theta is unchanged."""
    theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    direction = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)

    def closure():
        moved = (theta**2).sum()
        return -(theta @ direction) + 1e3 * moved, 0.5 * moved

    optimizer = TRPO([theta], max_kl=0.01)
    optimizer.step(closure)
    assert optimizer.last_step["accepted"] == 0.0 and optimizer.last_step["kl"] == 0.0
    assert torch.equal(theta.detach(), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"max_kl": 0.0}, "max_kl"), ({"max_kl": float("nan")}, "max_kl"), ({"max_kl": True}, "max_kl"), ({"cg_iters": 0}, "cg_iters"),
     ({"backtrack_ratio": 1.0}, "backtrack_ratio"), ({"damping": -1.0}, "damping")],
)
def test_trpo_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TRPO([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    with pytest.raises(ValueError, match="closure"):
        TRPO([torch.nn.Parameter(torch.zeros(2))]).step()


def test_trpo_given_a_loss_only_closure_says_what_it_needs():
    """A learner under automatic optimisation hands the optimiser a loss-only closure: a message, not an unpack error."""
    weight = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(TypeError, match="closure returning \\(loss, kl\\).*few-shot learners train with a gradient optimizer"):
        TRPO([weight]).step(lambda: (weight**2).sum())


def _maml_trpo(**kwargs):
    return MAMLRL(PointNavigation2D(horizon=6), 3, hidden_sizes=[8], inner_steps=2, inner_lr=0.5, batch_trials=6,
                  center_advantages=True, optimizer=partial(TRPO, max_kl=0.01), **kwargs)


@pytest.mark.parametrize("adapt_log_std", [False, True])
def test_maml_trpo_objective_starts_as_the_ppo_surrogate_with_zero_kl(adapt_log_std):
    """At the parameters that acted, the unclipped surrogate and PPO's clipped one have the same value and gradient
    (every ratio is 1), and the KL from the start of the step is 0 with a zero gradient."""
    torch.manual_seed(0)
    agent = _maml_trpo(adapt_log_std=adapt_log_std, init_log_std=-0.5)
    batch = agent.collect(0)
    params = list(agent.parameters())
    loss, kl = agent.trpo_objective(batch, {})
    trpo_grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    kl_grads = torch.autograd.grad(kl, params, allow_unused=True)
    ppo = agent.outer_loss(batch)
    ppo_grads = torch.autograd.grad(ppo, params, allow_unused=True)
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-12)
    assert float(loss.detach()) == pytest.approx(float(ppo.detach()), rel=1e-5)
    for t, p, k in zip(trpo_grads, ppo_grads, kl_grads):
        if p is None:
            continue
        torch.testing.assert_close(t, p, rtol=1e-4, atol=1e-6)
        assert k is None or k.abs().max() < 1e-6
    assert max(float(p.abs().max()) for p in ppo_grads if p is not None) > 1e-3


def _fit(agent, steps, callbacks=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             limit_val_batches=0, enable_model_summary=False, callbacks=list(callbacks))
        trainer.fit(agent)
    return trainer


def test_maml_trpo_makes_one_trust_region_step_per_batch_through_lightning():
    torch.manual_seed(0)
    agent = _maml_trpo()
    assert not agent.automatic_optimization and agent.updates_per_iteration == 1
    before = [p.detach().clone() for p in agent.parameters()]
    steps: list[dict] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            steps.append(dict(trainer.optimizers[0].last_step))

    trainer = _fit(agent, 3, [Record()])
    assert trainer.global_step == 3 and agent._batch["iteration"] == 2  # three batches, one step each
    assert len(steps) == 3 and sum(step["accepted"] for step in steps) >= 2
    for step in steps:
        if step["accepted"]:
            assert 0 < step["kl"] <= 0.01 and step["loss_after"] < step["loss_before"] and 0 < step["step_fraction"] <= 1
        else:
            assert step["kl"] == 0 and step["loss_after"] == step["loss_before"]
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))


def test_maml_trpo_refuses_an_lr_schedule():
    with pytest.raises(ValueError, match="lr_scheduler"):
        _maml_trpo(lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))


@pytest.mark.slow
def test_maml_trpo_learns_2d_navigation():
    """40 trust-region steps (20 goals each, through one inner step) lift the adapted return on the fixed test goals by
    more than 8 over the untrained policy's (measured: -73.4 -> -58.5 and -72.9 -> -53.8 on seeds 0 and 1, 95% CI +-2.8)."""
    pl.seed_everything(0, verbose=False)
    agent = MAMLRL(PointNavigation2D(horizon=20), 8, hidden_sizes=[32, 32], inner_steps=1, inner_lr=0.5, batch_trials=20,
                   center_advantages=True, test_trials=100, optimizer=partial(TRPO, max_kl=0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(agent, verbose=False)
        untrained = agent.last_evaluation.mean
        trainer = _fit(agent, 40)
        trainer.test(agent, verbose=False)
    assert agent.last_evaluation.mean > untrained + 8, f"{untrained:.2f} -> {agent.last_evaluation.mean:.2f} after 40 trust-region steps"


@pytest.mark.slow
def test_benchmark_script_times_a_trpo_step_against_a_ppo_epoch(tmp_path):
    """scripts/benchmark_trpo.py on a small copy of configs/compare/point2d_maml_trpo.yaml prints its one-row table."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.helpers import REPO

    cfg = yaml.safe_load((REPO / "configs" / "compare" / "point2d_maml_trpo.yaml").read_text())
    cfg["family"]["init_args"]["horizon"] = 5
    cfg["learners"]["maml"]["model"]["init_args"].update(hidden_sizes=[8], batch_trials=2, n_episodes=8, train_chunk_episodes=2)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark_trpo.py"), "--config", str(path), "--repeats", "1"],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    row = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(row) == 1
    collect, step, solve, epoch, epochs = (float(x) for x in row[0].strip("| ").split(" | "))
    assert 0 < solve <= step and epoch > 0 and epochs == 4
    assert "3 inner steps, 2 trials of 40 steps" in out and "CPU:" in out


# ---------------------------------------------------------------------------------- the memory agents (RL2, SNAILAgent)
def _sequence_trpo(kind, family=None, **kwargs):
    family = family or BernoulliBandits(3)
    if kind == "rl2":
        return RL2(family, 3, hidden_size=8, batch_trials=6, optimizer=partial(TRPO, max_kl=0.01), **kwargs)
    return SNAILAgent(family, 3, layout=["tc:8", "attn:8:8"], embed_size=8, batch_trials=6,
                      optimizer=partial(TRPO, max_kl=0.01), **kwargs)


@pytest.mark.parametrize("kind", ["rl2", "snail"])
@pytest.mark.parametrize("box", [False, True], ids=["discrete", "gaussian"])
def test_sequence_trpo_objective_starts_as_the_ppo_surrogate_with_zero_kl(kind, box):
    """At the parameters that acted, TRPO's loss and its gradient over the trust region's parameters equal PPO's
    policy loss (no value term: every ratio is 1), and the KL from the start of the step is 0 with a zero gradient."""
    torch.manual_seed(0)
    family = PointNavigation2D(horizon=4) if box else None
    agent = _sequence_trpo(kind, family, entropy_coef=0.05, value_coef=0.0, init_log_std=-0.5)
    params = agent.configure_optimizers().param_groups[0]["params"]
    assert all(p is not q for p in params for q in agent.value.parameters())
    assert len(params) == len(list(agent.parameters())) - 2  # all but the value head's weight and bias
    batch = agent.collect(0)
    loss, kl = agent.trpo_objective(batch, [])
    trpo_grads = torch.autograd.grad(loss, params, retain_graph=True)
    kl_grads = torch.autograd.grad(kl, params, allow_unused=True)
    ppo, _ = agent.ppo_loss(batch)
    ppo_grads = torch.autograd.grad(ppo, params)
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-7)
    assert float(loss.detach()) == pytest.approx(float(ppo.detach()), rel=1e-5)
    for t, p, k in zip(trpo_grads, ppo_grads, kl_grads):
        torch.testing.assert_close(t, p, rtol=1e-4, atol=1e-6)
        assert k is None or k.abs().max() < 1e-6
    assert max(float(p.abs().max()) for p in ppo_grads) > 1e-3


def test_value_head_is_the_ridge_regression_of_the_returns_on_the_memory():
    """After fit_value_head the ridge normal equations hold, and the value loss on the batch is far below the initial head's."""
    torch.manual_seed(0)
    agent = _sequence_trpo("rl2")
    batch = agent.collect(0)
    mask = batch["alive"]
    with torch.no_grad():
        features = agent.features(batch["inputs"])[mask].double()
        before = float(((agent.value(features.float()).squeeze(-1) - batch["returns"][mask]) ** 2).mean())
    agent.fit_value_head(batch)
    x = torch.cat([features, torch.ones_like(features[:, :1])], 1)
    w = torch.cat([agent.value.weight[0], agent.value.bias]).detach().double()
    y = batch["returns"][mask].double()
    ridge = agent.value_ridge * (x.T @ x).diagonal().mean()
    normal = x.T @ (x @ w - y) + ridge * w  # the gradient of |x w - y|^2 / 2 + ridge |w|^2 / 2
    assert float(normal.abs().max()) < 1e-4 * float((x.T @ y).abs().max())
    after = float(((x @ w - y) ** 2).mean())
    assert after < 0.5 * before, f"value MSE {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("kind", ["rl2", "snail"])
def test_sequence_trpo_makes_one_trust_region_step_per_batch_through_lightning(kind):
    torch.manual_seed(0)
    agent = _sequence_trpo(kind)
    assert agent.uses_trpo and not agent.automatic_optimization and agent.updates_per_iteration == 1
    value_before = agent.value.weight.detach().clone()
    memory_before = [p.detach().clone() for n, p in agent.named_parameters() if not n.startswith("value.")]
    steps: list[dict] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            steps.append(dict(trainer.optimizers[0].last_step))

    trainer = _fit(agent, 3, [Record()])
    assert trainer.global_step == 3 and agent._batch["iteration"] == 2
    assert len(steps) == 3 and sum(step["accepted"] for step in steps) >= 2
    for step in steps:
        if step["accepted"]:
            assert 0 < step["kl"] <= 0.01 and step["loss_after"] < step["loss_before"]
    after = [p for n, p in agent.named_parameters() if not n.startswith("value.")]
    assert any(not torch.equal(b, p) for b, p in zip(memory_before, after))
    assert not torch.equal(value_before, agent.value.weight)


def test_sequence_trpo_refuses_an_lr_schedule():
    with pytest.raises(ValueError, match="RL2: an lr_scheduler"):
        _sequence_trpo("rl2", lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1))
