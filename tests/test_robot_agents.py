"""Every agent with continuous actions (issue 16): a user's Gymnasium env, 2D navigation, MuJoCo, observation normalisation.

Needs gymnasium (the ``mujoco`` extra); the GymTaskFamily tests skip with the import error where it is absent.
"""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.rl.base import Box, seeded_generator
from rnnmeta.rl.maml_rl import MAMLRL
from rnnmeta.rl.navigation import PointNavigation2D
from rnnmeta.rl.rl2 import RL2
from rnnmeta.rl.snail_agent import SNAILAgent

AGENTS = {
    "rl2": functools.partial(RL2, hidden_size=16),
    "snail": functools.partial(SNAILAgent, layout=["tc:8", "attn:8:8"], embed_size=8),
    "maml": functools.partial(MAMLRL, hidden_sizes=[16, 16], inner_steps=1),
}


def trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, accelerator="cpu", num_sanity_val_steps=0)


def updates_per_iteration(agent) -> int:
    return agent.updates_per_iteration if hasattr(agent, "updates_per_iteration") else agent.ppo_epochs


def train_a_few_steps(agent, iterations: int = 2) -> None:
    before = {k: v.detach().clone() for k, v in agent.named_parameters()}
    trainer(iterations * updates_per_iteration(agent)).fit(agent)
    after = dict(agent.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "training changed no parameter"


def reach_family():
    pytest.importorskip("gymnasium", reason="GymTaskFamily needs gymnasium: pip install 'rnnmeta[mujoco]'")
    from tests.gym_envs import Reach1D, sample_target

    from rnnmeta.rl.gym_family import GymTaskFamily

    return GymTaskFamily(Reach1D, sample_target, horizon=6)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_trains_on_a_users_gym_env(name):
    fam = reach_family()
    agent = AGENTS[name](fam, n_episodes=2, batch_trials=4, val_trials=4, test_trials=4, normalize_observations=True)
    train_a_few_steps(agent)
    traj = agent.rollout(fam, fam.sample_tasks(3, seeded_generator(0, "test")))
    assert traj.actions.shape == (3, 12, 1) and traj.actions.dtype == torch.float32
    assert torch.isfinite(traj.rewards).all() and (traj.rewards <= 0).all()
    assert agent.obs_norm.count.item() > 0  # the first batch's observations joined the statistics
    fam.close()


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_agent_trains_on_point_navigation(name):
    fam = PointNavigation2D(horizon=10)
    agent = AGENTS[name](fam, n_episodes=2, batch_trials=4, val_trials=4, test_trials=4, init_log_std=-1.0)
    assert agent.obs_norm is None
    log_std = agent.log_std if name == "maml" else agent.policy.log_std
    assert torch.equal(log_std.detach(), torch.full((2,), -1.0))  # the Gaussian's initial std, e^-1
    train_a_few_steps(agent)
    traj = agent.rollout(fam, fam.sample_tasks(3, seeded_generator(0, "test")))
    assert traj.actions.shape == (3, 20, 2) and torch.isfinite(traj.rewards).all()


def test_observation_statistics_survive_a_checkpoint_round_trip(tmp_path):
    fam = reach_family()
    agent = RL2(fam, n_episodes=2, hidden_size=8, batch_trials=4, val_trials=4, test_trials=4, normalize_observations=True)
    t = trainer(2 * agent.updates_per_iteration + 1)
    t.fit(agent)
    norm = agent.obs_norm
    assert norm.count.item() == 2 * 4 * 12  # two batches of 4 trials x 12 steps (none ended early)
    assert not torch.equal(norm.var, torch.ones_like(norm.var))
    path = tmp_path / "agent.ckpt"
    t.save_checkpoint(path)
    assert "obs_norm.mean" in torch.load(path, weights_only=False)["state_dict"]
    restored = RL2.load_from_checkpoint(path, family=fam)
    for key in ("count", "mean", "var"):
        assert torch.equal(getattr(restored.obs_norm, key), getattr(norm, key)), key
    tasks = fam.sample_tasks(3, seeded_generator(1, "test"))
    a = agent.rollout(fam, tasks, seed=3, greedy=True).actions
    b = restored.rollout(fam, tasks, seed=3, greedy=True).actions
    assert torch.equal(a, b)
    # the statistics matter: a restored agent without them acts differently on the same inputs
    fresh = RL2.load_from_checkpoint(path, family=fam)
    fresh.obs_norm.mean.zero_()
    fresh.obs_norm.var.fill_(1.0)
    assert not torch.equal(fresh.rollout(fam, tasks, seed=3, greedy=True).actions, a)
    fam.close()


def test_normalize_observations_refuses_discrete_observations():
    from rnnmeta.rl.bandits import BernoulliBandits

    with pytest.raises(ValueError, match="normalize_observations needs a Box observation space"):
        RL2(BernoulliBandits(3), n_episodes=2, normalize_observations=True)


def test_rl2_trains_on_half_cheetah_vel_with_normalisation():
    try:
        from rnnmeta.rl.mujoco import HalfCheetahVel, require_mujoco

        require_mujoco()
    except ImportError as err:
        pytest.skip(f"MuJoCo families skipped, mujoco cannot load: {err}")
    fam = HalfCheetahVel(horizon=8)
    assert fam.action_space == Box((6,), -1.0, 1.0)
    agent = RL2(fam, n_episodes=2, hidden_size=16, batch_trials=3, val_trials=3, test_trials=3, normalize_observations=True)
    train_a_few_steps(agent, iterations=2)
    assert agent.obs_norm.count.item() == 3 * 16
    fam.close()


@pytest.mark.parametrize("name", ["rl2", "snail"])
def test_scaled_rewards_give_gae_the_rewards_over_the_running_return_std(name):
    """scale_rewards: a batch's rewards are divided by the std of the discounted returns (merged with the running
    statistics, first batch: its own), and the batch's returns join the statistics once its updates are done."""
    from rnnmeta.rl.ppo import gae

    fam = PointNavigation2D(horizon=10)
    kwargs = dict(n_episodes=2, batch_trials=4, val_trials=4, test_trials=4, gamma=0.9, gae_lambda=0.5)
    plain, scaled = AGENTS[name](fam, **kwargs), AGENTS[name](fam, scale_rewards=True, **kwargs)
    scaled.load_state_dict(plain.state_dict(), strict=False)  # the same policy: the same trajectories
    assert plain.return_norm is None and scaled.return_norm.count.item() == 0
    raw, batch = plain.collect(0), scaled.collect(0)
    assert torch.equal(batch["inputs"], raw["inputs"]) and torch.equal(batch["total"], raw["total"])
    discounted, mask = batch["discounted"], raw["alive"]
    rewards = discounted - 0.9 * torch.cat([discounted[:, 1:], torch.zeros_like(discounted[:, :1])], 1)
    # G_t = r_t + gamma G_{t+1}: the rewards it implies are those the agent received (its reward input, one step later)
    assert torch.allclose(rewards[:, :-1], raw["inputs"][:, 1:, -2], atol=1e-5)
    std = discounted[mask].double().var(unbiased=False).sqrt().float()  # the first batch: its own statistics
    values = raw["returns"] - raw["advantages"]
    expected_adv, expected_ret = gae(rewards / std, values, 0.9, 0.5)
    assert torch.allclose(batch["advantages"], expected_adv, atol=1e-5)
    assert torch.allclose(batch["returns"], expected_ret, atol=1e-5)
    assert not torch.allclose(batch["advantages"], raw["advantages"], atol=1e-2)
    assert scaled.return_norm.count.item() == 0  # not merged while the batch is being trained on
    alive_steps: dict[int, int] = {}  # per training iteration: the steps its returns add to the statistics

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            alive_steps[module._batch["iteration"]] = int(module._batch["alive"].sum())

    fit = trainer(2 * scaled.updates_per_iteration + 1)
    fit.callbacks.append(Record())
    fit.fit(scaled)  # iterations 0 and 1 done, 2 collected
    assert alive_steps[0] == int(mask.sum()) and sorted(alive_steps) == [0, 1, 2]
    assert scaled.return_norm.count.item() == alive_steps[0] + alive_steps[1]  # not iteration 2's, still being trained on
    assert "return_norm.var" in scaled.state_dict()


def test_scale_rewards_must_be_a_bool():
    with pytest.raises(TypeError, match=r"scale_rewards must be true or false, got scale_rewards='yes'"):
        RL2(PointNavigation2D(horizon=10), n_episodes=2, scale_rewards="yes")


@pytest.mark.parametrize("name", ["rl2", "snail"])
def test_reward_input_off_zeroes_the_reward_input_only_and_always_restores_it(name):
    """The control of ``scripts/robot_compare.py``: inside ``reward_input_off`` the memory agent reads every previous
    reward as 0 and nothing else changes; a trial played so differs from the normal one from the first rewarded step."""
    family = PointNavigation2D(horizon=5)
    agent = AGENTS[name](family, n_episodes=2).eval()
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    reward, done = torch.randn(3, generator=g), torch.tensor([True, False, True])
    seen = agent.make_input(obs, act, reward, done)
    with agent.reward_input_off() as same:
        blind = agent.make_input(obs, act, reward, done)
    assert same is agent
    torch.testing.assert_close(blind[:, -2], torch.zeros(3))  # [obs, previous action, previous reward, done]
    torch.testing.assert_close(seen[:, -2], reward)
    torch.testing.assert_close(torch.cat([blind[:, :-2], blind[:, -1:]], 1), torch.cat([seen[:, :-2], seen[:, -1:]], 1))
    with pytest.raises(RuntimeError, match="inside"), agent.reward_input_off():
        raise RuntimeError("inside")
    torch.testing.assert_close(agent.make_input(obs, act, reward, done), seen)  # restored after an error too
    tasks = family.sample_tasks(4, seeded_generator(0, "tasks"))
    normal = agent.rollout(family, tasks, seed=0, greedy=True)
    with agent.reward_input_off():
        control = agent.rollout(family, tasks, seed=0, greedy=True)
    torch.testing.assert_close(control.actions[:, 0], normal.actions[:, 0])  # no reward has been seen at t = 0
    assert not torch.allclose(control.actions[:, 1:], normal.actions[:, 1:])
