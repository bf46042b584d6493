"""The classical algorithms against values computed by hand on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch

from rnnmeta.rl import BernoulliBandits, TabularMDPs, evaluate, run_trials, seeded_generator
from rnnmeta.rl.classical import (
    PSRL,
    UCB1,
    EpsilonGreedy,
    Gittins,
    Greedy,
    RandomActor,
    Thompson,
    ValueIterationOracle,
    gittins_table,
    make_baseline,
    sample_beta,
    sample_gamma,
)


def test_ucb1_pulls_in_the_hand_computed_order():
    # means [1, 0]: arm 0 always pays 1, arm 1 never. Each arm once, then arm 0 until
    # sqrt(2 ln t) > 1 + sqrt(2 ln t / n0), which first holds at t = 6 (1.893 > 1.846; t = 5: 1.794 < 1.897).
    fam = BernoulliBandits(2)
    traj = run_trials(UCB1(), fam, {"means": torch.tensor([[1.0, 0.0]])}, 7, seeded_generator(0, "e"), seeded_generator(0, "a"))
    assert traj.actions[0].tolist() == [0, 1, 0, 0, 0, 0, 1]


def test_thompson_picks_the_better_posterior_with_probability_two_thirds():
    # after one success of arm 0: P(Beta(2, 1) > U(0, 1)) = int_0^1 2x * x dx = 2/3
    fam, n = BernoulliBandits(2), 40000
    ts = Thompson()
    ts.begin_trials(fam, {"means": torch.zeros(n, 2)}, 2, seeded_generator(0, "a"))
    ts.observe(torch.zeros(n, dtype=torch.long), torch.ones(n), torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))
    frac = float((ts.act(torch.zeros(n, dtype=torch.long))[0] == 0).float().mean())
    assert abs(frac - 2 / 3) < 0.01


def test_gamma_and_beta_samplers_have_the_right_moments():
    g = seeded_generator(0, "g")
    x = sample_gamma(torch.full((100000,), 3.0), g)
    assert abs(float(x.mean()) - 3.0) < 0.03 and abs(float(x.var()) - 3.0) < 0.1
    b = sample_beta(torch.full((100000,), 2.0), torch.full((100000,), 5.0), g)
    assert abs(float(b.mean()) - 2 / 7) < 0.005


def test_gittins_index_hand_values():
    table = gittins_table(6)
    # one pull left: the posterior mean
    for s, f in [(0, 0), (2, 1), (0, 5)]:
        assert table[s, f, 1] == pytest.approx((s + 1) / (s + f + 2), abs=1e-6)
    # two pulls left, no data: 2 lam = 1/2 (1 + max(lam, 2/3)) + 1/2 max(lam, 1/3)  ->  lam = 5/9
    assert table[0, 0, 2] == pytest.approx(5 / 9, abs=1e-6)
    # more pulls left: a larger exploration bonus, below 1
    assert 5 / 9 < table[0, 0, 3] < table[0, 0, 6] < 1
    with pytest.raises(ValueError, match="horizon=0"):
        gittins_table(0)


def test_bandit_baselines_rank_as_in_duan_et_al():
    fam = BernoulliBandits(5)
    tasks = fam.sample_tasks(2000, seeded_generator(0, "test"))
    scores = {name: evaluate(make_baseline(name), fam, tasks, 10).mean for name in ("random", "ucb1", "thompson", "greedy", "gittins")}
    assert abs(scores["random"] - 5.0) < 0.15  # half of 10 pulls
    assert abs(scores["gittins"] - 6.6) < 0.15  # Duan et al. / SNAIL Table 3, N = 10, K = 5
    assert scores["gittins"] >= max(scores["ucb1"], scores["thompson"]) and scores["ucb1"] > scores["random"] + 0.3


def test_psrl_lies_between_random_and_the_oracle():
    fam = TabularMDPs(n_states=5, n_actions=3, horizon=5)
    tasks = fam.sample_tasks(300, seeded_generator(0, "test"))
    score = {a.name: evaluate(a, fam, tasks, 10).mean for a in (RandomActor(), PSRL(), ValueIterationOracle())}
    assert score["random"] + 5 < score["psrl"] < score["value_iteration"]


def test_baselines_refuse_families_they_cannot_play():
    with pytest.raises(ValueError, match="bandit algorithm"):
        run_trials(Gittins(), TabularMDPs(), TabularMDPs().sample_tasks(2, seeded_generator(0)), 1, seeded_generator(0), seeded_generator(1))
    with pytest.raises(ValueError, match="TabularMDPs"):
        run_trials(PSRL(), BernoulliBandits(2), {"means": torch.rand(2, 2)}, 1, seeded_generator(0), seeded_generator(1))
    with pytest.raises(ValueError, match="epsilon=2"):
        EpsilonGreedy(2.0)
    with pytest.raises(ValueError, match="unknown classical algorithm 'oracle'"):
        make_baseline("oracle")


def test_greedy_exploits_the_posterior_mean():
    g = Greedy()
    fam = BernoulliBandits(3)
    g.begin_trials(fam, {"means": torch.zeros(1, 3)}, 5, seeded_generator(0))
    g.observe(torch.tensor([1]), torch.tensor([1.0]), torch.tensor([True]), torch.tensor([True]))  # arm 1: 2/3 > 1/2
    assert g.act(torch.zeros(1, dtype=torch.long))[0].item() == 1
    assert math.isclose(float(g.scores()[0, 1]), 2 / 3, rel_tol=1e-6)


def test_an_actor_with_the_old_three_argument_observe_is_refused_naming_alive():
    class Old:
        def begin_trials(self, family, tasks, n_episodes, generator):
            self.b = family.check_tasks(tasks)

        def act(self, obs):
            return torch.zeros(self.b, dtype=torch.long), {}

        def observe(self, action, reward, episode_end):
            pass

    fam = BernoulliBandits(2)
    tasks = fam.sample_tasks(3, seeded_generator(0, "t"))
    with pytest.raises(TypeError, match=r"Old\.observe\(action, reward, episode_end\).*alive"):
        run_trials(Old(), fam, tasks, 2, seeded_generator(0, "e"), seeded_generator(0, "a"))

    class New(Old):
        def observe(self, action, reward, episode_end, alive):
            self.alive = alive

    actor = New()
    traj = run_trials(actor, fam, tasks, 2, seeded_generator(0, "e"), seeded_generator(0, "a"))
    assert traj.rewards.shape == (3, 2) and actor.alive.dtype == torch.bool and actor.alive.all()
