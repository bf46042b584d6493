"""rnnmeta.rl task families: seeded batched sampling, stepping, value iteration, and bad settings."""

from __future__ import annotations

import pytest
import torch

from rnnmeta.rl import BernoulliBandits, Box, Discrete, TabularMDPs, eval_tasks, fingerprint, run_trials, seeded_generator, value_iteration
from rnnmeta.rl.classical import RandomActor, ValueIterationOracle


def test_bandit_tasks_are_seeded_and_rewards_follow_the_means():
    fam = BernoulliBandits(3)
    a = fam.sample_tasks(4, seeded_generator(0, "x"))
    b = fam.sample_tasks(4, seeded_generator(0, "x"))
    c = fam.sample_tasks(4, seeded_generator(1, "x"))
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    assert a["means"].shape == (4, 3) and 0 <= float(a["means"].min()) and float(a["means"].max()) <= 1
    means = torch.tensor([[0.0, 0.25, 1.0]]).expand(20000, 3)
    env = fam.make({"means": means}, seeded_generator(0, "env"))
    rewards = torch.stack([env.step(torch.full((20000,), arm, dtype=torch.long))[1] for arm in range(3)], 1)
    assert rewards[:, 0].sum() == 0 and rewards[:, 2].mean() == 1
    assert abs(float(rewards[:, 1].mean()) - 0.25) < 0.01


def test_mdp_tasks_have_the_papers_distributions():
    fam = TabularMDPs(n_states=10, n_actions=5, horizon=10)
    tasks = fam.sample_tasks(400, seeded_generator(0, "x"))
    mu, p = tasks["reward_mean"], tasks["transitions"]
    assert mu.shape == (400, 10, 5) and p.shape == (400, 10, 5, 10)
    assert abs(float(mu.mean()) - 1.0) < 0.02 and abs(float(mu.std()) - 1.0) < 0.02
    torch.testing.assert_close(p.sum(-1), torch.ones(400, 10, 5))
    # flat Dirichlet over 10 states: each entry's mean 1/10 and variance (1/10)(9/10)/11
    assert abs(float(p.mean()) - 0.1) < 1e-6 and abs(float(p.var()) - 0.9 / 110) < 5e-4


def test_mdp_env_follows_transitions_and_reward_noise():
    fam = TabularMDPs(n_states=2, n_actions=1, horizon=1)
    tasks = {"reward_mean": torch.tensor([[[3.0], [-1.0]]]).expand(20000, 2, 1),
             "transitions": torch.tensor([[[[0.2, 0.8]], [[1.0, 0.0]]]]).expand(20000, 2, 1, 2)}
    env = fam.make(tasks, seeded_generator(0, "env"))
    s0 = env.reset().clone()
    nxt, r, _ = env.step(torch.zeros(20000, dtype=torch.long))
    from_zero = s0 == 0
    assert abs(float(nxt[from_zero].float().mean()) - 0.8) < 0.02  # P(1 | 0) = 0.8
    assert bool((nxt[~from_zero] == 0).all())  # P(0 | 1) = 1
    assert abs(float(r[from_zero].mean()) - 3.0) < 0.05 and abs(float(r[from_zero].std()) - 1.0) < 0.05


def test_value_iteration_on_a_hand_solved_two_state_mdp():
    # s0: a0 pays 1 and stays; a1 pays 0 and moves to s1 w.p. 1/2. s1: a0 pays 0 and goes to s0; a1 pays 2 and stays.
    mu = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    p = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.0, 1.0]]]])
    q, v = value_iteration(mu, p, horizon=2)
    # last step: Q = rewards; V = [1, 2]. First step: Q(s0) = [1 + 1, 0 + (1 + 2) / 2] = [2, 1.5], Q(s1) = [0 + 1, 2 + 2] = [1, 4]
    torch.testing.assert_close(q[0, 1], torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    torch.testing.assert_close(q[0, 0], torch.tensor([[2.0, 1.5], [1.0, 4.0]]))
    torch.testing.assert_close(v[0], torch.tensor([[2.0, 4.0], [1.0, 2.0], [0.0, 0.0]]))


def test_oracle_beats_random_and_earns_its_value():
    fam = TabularMDPs(n_states=4, n_actions=3, horizon=5)
    tasks = fam.sample_tasks(2000, seeded_generator(0, "t"))
    oracle = run_trials(ValueIterationOracle(), fam, tasks, 2, seeded_generator(0, "e"), seeded_generator(0, "a"))
    _, v = value_iteration(tasks["reward_mean"], tasks["transitions"], 5)
    expected = 2 * v[:, 0].mean(-1)  # uniform start state, two episodes
    assert abs(float(oracle.total_reward.mean() - expected.mean())) < 3 * float(oracle.total_reward.std()) / 2000**0.5
    rand = run_trials(RandomActor(), fam, tasks, 2, seeded_generator(0, "e"), seeded_generator(0, "a"))
    assert float(oracle.total_reward.mean()) > float(rand.total_reward.mean()) + 2


def test_trials_have_aligned_episodes_and_fixed_test_tasks():
    fam = TabularMDPs(n_states=3, n_actions=2, horizon=4)
    tasks = eval_tasks(fam, 5, seed=0)
    assert fingerprint(tasks) == fingerprint(eval_tasks(fam, 5, seed=0)) != fingerprint(eval_tasks(fam, 5, seed=0, split="val"))
    traj = run_trials(RandomActor(), fam, tasks, 3, seeded_generator(0, "e"), seeded_generator(0, "a"))
    assert traj.obs.shape == (5, 12) and traj.actions.shape == (5, 12) and traj.rewards.shape == (5, 12)
    assert traj.episode_end[0].tolist() == [False, False, False, True] * 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: BernoulliBandits(0), "n_arms=0"),
        (lambda: TabularMDPs(horizon=0), "horizon=0"),
        (lambda: TabularMDPs(n_states=-1), "n_states=-1"),
        (lambda: Discrete(0), "n=0"),
        (lambda: Box(shape=()), "shape"),
        (lambda: run_trials(RandomActor(), BernoulliBandits(2), {"means": torch.rand(3, 2)}, 0, seeded_generator(0, "e"), seeded_generator(0, "a")), "n_episodes=0"),
        (lambda: BernoulliBandits(2).make({"means": torch.rand(3, 5)}, seeded_generator(0)), r"'means' \[B, 2\]"),
        (lambda: BernoulliBandits(2).make({"means": torch.rand(3, 2)}, seeded_generator(0)).step(torch.tensor([0, 1, 2])), "0..1"),
        (lambda: BernoulliBandits(2).make({"means": torch.rand(3, 2)}, seeded_generator(0)).step(torch.zeros(3)), "int64"),
        (lambda: value_iteration(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, 2), 0), "horizon=0"),
    ],
)
def test_bad_settings_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()
