"""The privileged critic of the memory agents (``privileged_critic``): a value head that reads the task, a policy that never does."""

from __future__ import annotations

import warnings
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.rl import TRPO, BernoulliBandits, TabularMDPs, run_trials, seeded_generator
from rnnmeta.rl.agent import PrivilegedCritic
from rnnmeta.rl.navigation import PointNavigation2D
from rnnmeta.rl.ppo import value_loss
from rnnmeta.rl.rl2 import RL2
from rnnmeta.rl.snail_agent import SNAILAgent

torch.set_num_threads(1)

AGENTS = {
    "rl2": lambda fam, n, **kw: RL2(fam, n, hidden_size=16, batch_trials=4, **kw),
    "snail": lambda fam, n, **kw: SNAILAgent(fam, n, layout=["tc:8", "attn:8:8", "tc:4"], embed_size=8, batch_trials=4, **kw),
}


def _trial(agent, fam, tasks, n_episodes):
    return run_trials(agent.actor(), fam, tasks, n_episodes, seeded_generator(0, "e"), seeded_generator(0, "a"))


def test_task_features_flatten_every_task_tensor_in_key_order():
    g = seeded_generator(0, "t")
    bandits = BernoulliBandits(4)
    tasks = bandits.sample_tasks(3, g)
    torch.testing.assert_close(bandits.task_features(tasks), tasks["means"], rtol=0, atol=0)
    mdps = TabularMDPs(n_states=3, n_actions=2, horizon=4)
    tasks = mdps.sample_tasks(5, g)
    features = mdps.task_features(tasks)
    assert features.shape == (5, 3 * 2 + 3 * 2 * 3)
    torch.testing.assert_close(features[:, :6], tasks["reward_mean"].reshape(5, 6), rtol=0, atol=0)  # 'reward_mean' < 'transitions'
    torch.testing.assert_close(features[:, 6:], tasks["transitions"].reshape(5, 18), rtol=0, atol=0)
    nav = PointNavigation2D()
    tasks = nav.sample_tasks(2, g)
    torch.testing.assert_close(nav.task_features(tasks), tasks["goal"].float(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="'means'"):
        bandits.task_features({"means": torch.rand(2, 3)})


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_acting_records_the_value_that_training_recomputes(name):
    torch.manual_seed(0)
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=3)
    agent = AGENTS[name](fam, 4, privileged_critic=True)
    assert isinstance(agent.value, PrivilegedCritic)
    tasks = fam.sample_tasks(4, seeded_generator(0, "t"))
    traj = _trial(agent, fam, tasks, 4)
    with torch.no_grad():
        h = agent.features(agent.trajectory_inputs(traj))
        value = agent.value_estimate(h, fam.task_features(tasks))
        logp = agent.policy.log_prob(agent.policy(h), traj.actions)
    torch.testing.assert_close(value, traj.extras["value"], atol=1e-5, rtol=0)
    torch.testing.assert_close(logp, traj.extras["logp"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_the_policy_never_reads_the_task(name, monkeypatch):
    """Other task features for the critic: the same actions and probabilities, other values."""
    torch.manual_seed(0)
    fam = BernoulliBandits(3)
    agent = AGENTS[name](fam, 6, privileged_critic=True)
    tasks = fam.sample_tasks(8, seeded_generator(0, "t"))
    first = _trial(agent, fam, tasks, 6)
    monkeypatch.setattr(fam, "task_features", lambda t: torch.rand(t["means"].shape[0], 3) * 10)
    second = _trial(agent, fam, tasks, 6)
    assert torch.equal(first.actions, second.actions)
    torch.testing.assert_close(first.extras["logp"], second.extras["logp"], rtol=0, atol=0)
    assert not torch.allclose(first.extras["value"], second.extras["value"])


def test_the_task_tells_the_critic_what_a_trial_is_worth_before_the_memory_knows_anything():
    """Bandits, 10 pulls, the untrained (nearly uniform) policy: at the first pull the memory has seen nothing, so the
    plain value head can only predict the mean return; the privileged critic, fitted to the same returns, predicts it
    from the arm means. About 40 % of the return's variance is that of 10 x the mean arm mean (100 / 60 of about 4)."""
    fam = BernoulliBandits(5)
    losses = {}
    for privileged in (False, True):
        torch.manual_seed(0)
        # gamma = lambda = 1: the returns are the returns-to-go themselves, the first one the trial's total reward
        agent = RL2(fam, 10, hidden_size=32, batch_trials=256, gamma=1.0, gae_lambda=1.0, privileged_critic=privileged)
        batch = agent.collect(0)
        torch.testing.assert_close(batch["returns"][:, 0], batch["total"])
        with torch.no_grad():
            h = agent.features(batch["inputs"])
        optimizer = torch.optim.Adam(agent.value.parameters(), lr=3e-2)
        for _ in range(400):
            optimizer.zero_grad()
            loss = value_loss(agent.value_estimate(h, batch.get("task_features")), batch["returns"], batch["alive"])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            first = agent.value_estimate(h, batch.get("task_features"))[:, 0]
            losses[privileged] = float(((first - batch["returns"][:, 0]) ** 2).mean())
            variance = float(batch["total"].var(unbiased=False))
    # the plain head's features at the first pull are the same in every trial: at best it predicts the mean return
    assert variance <= losses[False] < 1.1 * variance, (losses, variance)
    assert losses[True] < 0.75 * variance, (losses, variance)


def test_a_privileged_agent_trains_through_the_trainer_and_only_the_critic_reads_the_task_features():
    fam = BernoulliBandits(3)
    pl.seed_everything(0, verbose=False)
    agent = RL2(fam, 5, hidden_size=8, batch_trials=4, privileged_critic=True, critic_hidden=6)
    assert agent.value.net[0].in_features == 8 + 3 and agent.value.net[0].out_features == 6
    before = agent.value.net[0].weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             limit_val_batches=0, enable_model_summary=False)
        trainer.fit(agent)
    assert not torch.equal(before[:, 8:], agent.value.net[0].weight[:, 8:])  # the task's weights were trained
    assert agent.hparams["privileged_critic"] is True and agent.hparams["critic_hidden"] == 6


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: RL2(BernoulliBandits(2), 4, privileged_critic=True, optimizer=partial(TRPO, max_kl=0.01)), ValueError,
         "privileged_critic needs PPO"),
        (lambda: RL2(BernoulliBandits(2), 4, privileged_critic="yes"), TypeError, "privileged_critic='yes'"),
        (lambda: SNAILAgent(BernoulliBandits(2), 4, privileged_critic=True, critic_hidden=0), ValueError, "critic_hidden=0"),
        (lambda: RL2(BernoulliBandits(2), 4, memory_value_coef=0.5), ValueError, "memory_value_coef=0.5, privileged_critic=False"),
        (lambda: RL2(BernoulliBandits(2), 4, privileged_critic=True, memory_value_coef=-1.0), ValueError, "memory_value_coef=-1.0"),
        (lambda: RL2(BernoulliBandits(2), 4, privileged_critic=True).value_estimate(torch.zeros(2, 256)), ValueError,
         "its value needs the tasks' features"),
    ],
)
def test_bad_privileged_critic_settings_name_the_value(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_the_memory_value_head_learns_from_the_returns_beside_the_privileged_critic():
    """memory_value_coef: a second, memory-only value head, whose loss is added to PPO's with that weight."""
    fam = BernoulliBandits(3)
    torch.manual_seed(0)
    agent = RL2(fam, 5, hidden_size=8, batch_trials=6, privileged_critic=True, memory_value_coef=0.25)
    batch = agent.collect(0)
    minibatch = {k: batch[k] for k in ("inputs", "actions", "old_logp", "advantages", "returns", "alive", "task_features")}
    loss, stats = agent.ppo_loss(minibatch)
    h = agent.features(batch["inputs"])
    expected = value_loss(agent.memory_value(h).squeeze(-1), batch["returns"], batch["alive"])
    torch.testing.assert_close(stats["memory_value_loss"], expected.detach())
    without = agent.memory_value_coef
    agent.memory_value_coef = 0.0
    torch.testing.assert_close(loss - agent.ppo_loss(minibatch)[0], without * expected)
    loss.backward()
    assert agent.memory_value.weight.grad.abs().sum() > 0
    assert RL2(fam, 5, privileged_critic=True).__dict__["_modules"].get("memory_value") is None  # no head at 0

