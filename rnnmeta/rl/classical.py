"""The classical algorithms, run by the library on the same test tasks as the agents.

Bandits (Bernoulli, :class:`~rnnmeta.rl.bandits.BernoulliBandits`), as in Duan et al. 2016, Table 1:

* :class:`RandomActor`: uniform actions (any family);
* :class:`Greedy`: the arm of highest posterior mean under a Beta(1, 1) prior, ``(s + 1) / (n + 2)``;
* :class:`EpsilonGreedy`: :class:`Greedy`, but a uniform arm with probability ``epsilon``;
* :class:`UCB1` (Auer et al. 2002): each arm once (lowest index first), then
  ``argmax mean_a + sqrt(2 ln t / n_a)`` with ``t`` the pulls so far;
* :class:`Thompson`: a draw from each arm's Beta(1 + s, 1 + f) posterior, the largest wins;
* :class:`Gittins`: the *finite-horizon* Gittins index (the calibration/retirement index of
  Gittins 1979 with the trial's remaining pulls as horizon; Kaufmann 2016 calls it FH-Gittins):
  the index of an arm with ``s`` successes, ``f`` failures and ``r`` pulls left is the reward
  ``lambda`` of a known arm at which a player with ``r`` pulls is indifferent between pulling the
  unknown arm (and switching to the known one later if they like) and taking the known one
  throughout. Computed exactly by dynamic programming and bisection (:func:`gittins_table`); it is
  the Bayes-optimal rule for one arm against a known one and the accepted approximation of the
  Bayes-optimal policy for ``K`` arms (the exact one grows as ``N^(2K)``).

Ties are broken uniformly at random. Tabular MDPs (:class:`~rnnmeta.rl.mdps.TabularMDPs`):

* :class:`RandomActor`;
* :class:`PSRL` (Osband et al. 2013): at the start of every episode, one MDP drawn from the
  posterior (rewards: the prior N(1, 1) with noise variance 1; transitions: Dirichlet(1 + counts))
  and solved by value iteration; greedy in it for the episode;
* :class:`ValueIterationOracle`: knows the task and acts optimally (finite-horizon value
  iteration); SNAIL's table divides every total reward by this one's.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from rnnmeta.rl.base import Box, Discrete, TaskFamily, Tasks
from rnnmeta.rl.mdps import TabularMDPs, value_iteration


# ---------------------------------------------------------------------------------- sampling with a generator
def sample_gamma(shape: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(``shape``, 1) draws for ``shape >= 1`` elementwise (Marsaglia & Tsang 2000), from ``generator``.

    ``torch.distributions`` take no generator; this does, so seeded actors are reproducible.
    """
    if shape.numel() and float(shape.min()) < 1:
        raise ValueError(f"sample_gamma needs shape >= 1, got min {float(shape.min())}")
    d = shape - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(shape)
    todo = torch.ones_like(shape, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(shape.shape, generator=generator, device=shape.device, dtype=shape.dtype)
        u = torch.rand(shape.shape, generator=generator, device=shape.device, dtype=shape.dtype)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        take = ok & todo
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    return out


def sample_beta(a: Tensor, b: Tensor, generator: torch.Generator) -> Tensor:
    """Beta(a, b) draws (a, b >= 1) as ``X / (X + Y)`` with ``X ~ Gamma(a)``, ``Y ~ Gamma(b)``."""
    x, y = sample_gamma(a, generator), sample_gamma(b, generator)
    return x / (x + y)


def argmax_random_ties(scores: Tensor, generator: torch.Generator) -> Tensor:
    """``argmax`` over the last dimension, ties broken uniformly at random ``[..., K] -> [...]``."""
    best = scores == scores.max(-1, keepdim=True).values
    noise = torch.rand(scores.shape, generator=generator, device=scores.device)
    return torch.where(best, noise, torch.full_like(noise, -1.0)).argmax(-1)


# ---------------------------------------------------------------------------------- base classes
class RandomActor:
    """Uniform actions: ``Discrete(n)`` uniformly, ``Box`` uniformly within finite bounds."""

    name = "random"

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        space = family.action_space
        if isinstance(space, Box) and not (math.isfinite(space.low) and math.isfinite(space.high)):
            raise ValueError(f"RandomActor needs a Box action space with finite bounds, got low={space.low}, high={space.high}")
        self.space, self.generator = space, generator
        self.batch = family.check_tasks(tasks)

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        g, dev = self.generator, obs.device
        if isinstance(self.space, Discrete):
            return torch.randint(0, self.space.n, (self.batch,), generator=g, device=dev), {}
        u = torch.rand(self.batch, *self.space.shape, generator=g, device=dev)
        return self.space.low + (self.space.high - self.space.low) * u, {}

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        pass


class BanditAlgorithm:
    """Shared bookkeeping of the bandit algorithms: successes ``s [B, K]``, failures ``f [B, K]``, pulls ``t``."""

    name = "bandit"

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        space = family.action_space
        if not isinstance(space, Discrete) or family.horizon != 1:
            raise ValueError(
                f"{type(self).__name__} is a bandit algorithm: it needs a Discrete action space and horizon 1, got "
                f"{family.describe()} with action space {space} and horizon {family.horizon}"
            )
        b = family.check_tasks(tasks)
        dev = next(iter(tasks.values())).device
        self.s = torch.zeros(b, space.n, device=dev)
        self.f = torch.zeros(b, space.n, device=dev)
        self.t, self.n_steps, self.generator = 0, n_episodes, generator
        self._rows = torch.arange(b, device=dev)

    def scores(self) -> Tensor:
        raise NotImplementedError

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return argmax_random_ties(self.scores(), self.generator), {}

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        self.s[self._rows, action] += reward
        self.f[self._rows, action] += 1 - reward
        self.t += 1


class Greedy(BanditAlgorithm):
    """The arm of highest posterior mean ``(s + 1) / (s + f + 2)`` (Beta(1, 1) prior)."""

    name = "greedy"

    def scores(self) -> Tensor:
        return (self.s + 1) / (self.s + self.f + 2)


class EpsilonGreedy(Greedy):
    """With probability ``epsilon`` a uniform arm, else :class:`Greedy`'s.

    Args:
        epsilon: exploration probability in [0, 1].
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"EpsilonGreedy epsilon must lie in [0, 1], got epsilon={epsilon!r}")
        self.epsilon = epsilon
        self.name = f"epsilon_greedy({epsilon:g})"

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        greedy, _ = super().act(obs)
        k = self.s.shape[1]
        g = self.generator
        explore = torch.rand(greedy.shape, generator=g, device=greedy.device) < self.epsilon
        uniform = torch.randint(0, k, greedy.shape, generator=g, device=greedy.device)
        return torch.where(explore, uniform, greedy), {}


class UCB1(BanditAlgorithm):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002): each arm once, then ``mean + sqrt(2 ln t / n)``."""

    name = "ucb1"

    def scores(self) -> Tensor:
        n = self.s + self.f
        untried = n == 0
        if bool(untried.any()):  # rows with an untried arm take their lowest-index untried arm
            first_untried = torch.zeros_like(n).scatter_(1, untried.float().argmax(1, keepdim=True), 1.0)
        bonus = torch.sqrt(2 * math.log(max(self.t, 1)) / n.clamp_min(1))
        ucb = self.s / n.clamp_min(1) + bonus
        if bool(untried.any()):
            ucb = torch.where(untried.any(1, keepdim=True), first_untried * 1e9, ucb)
        return ucb


class Thompson(BanditAlgorithm):
    """Thompson sampling (Thompson 1933): one Beta(1 + s, 1 + f) draw per arm, the largest wins."""

    name = "thompson"

    def scores(self) -> Tensor:
        return sample_beta(1 + self.s, 1 + self.f, self.generator)


@functools.lru_cache(maxsize=8)
def gittins_table(horizon: int, tol: float = 1e-7) -> np.ndarray:
    """Finite-horizon Gittins indices of a Bernoulli arm with a Beta(1, 1) prior, undiscounted.

    Returns ``G [H + 1, H + 1, H + 1]`` float64 with ``G[s, f, r]`` the index of an arm seen to
    succeed ``s`` and fail ``f`` times when ``r >= 1`` pulls remain (``s + f + r <= H``; other entries
    NaN): the ``lambda`` that solves ``lambda * r = C(lambda)``, where ``C`` is the value of pulling
    the arm now and then playing optimally between it and a known arm paying ``lambda``:
    ``W(i, j) = max(lambda * (r - k), p (1 + W(i + 1, j)) + (1 - p) W(i, j + 1))`` over ``i`` more
    successes and ``j`` more failures (``k = i + j``), ``p = (s + i + 1) / (s + f + k + 2)``,
    ``W = 0`` when no pull remains. Bisection to ``tol``; ``G[s, f, 1]`` is the posterior mean.
    Cost ``O(H^5 log(1 / tol))`` in numpy: about a second for ``H = 50`` on the 2-core machine.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"gittins_table: horizon must be an integer >= 1, got horizon={horizon!r}")
    h = horizon
    table = np.full((h + 1, h + 1, h + 1), np.nan)
    iters = max(1, math.ceil(math.log2(1.0 / tol)))
    for r in range(1, h + 1):
        roots = [(s, f) for s in range(h - r + 1) for f in range(h - r - s + 1)]
        s0 = np.array([x[0] for x in roots], dtype=np.float64)[:, None]
        f0 = np.array([x[1] for x in roots], dtype=np.float64)[:, None]
        lo, hi = np.zeros((len(roots), 1)), np.ones((len(roots), 1))
        for _ in range(iters):
            lam = 0.5 * (lo + hi)
            w = np.zeros((len(roots), r + 1))  # level k = r: nothing left
            for k in range(r - 1, 0, -1):  # W at level k from level k + 1
                i = np.arange(k + 1)[None, :]
                p = (s0 + i + 1) / (s0 + f0 + k + 2)
                cont = p * (1 + w[:, 1 : k + 2]) + (1 - p) * w[:, 0 : k + 1]
                w = np.maximum(lam * (r - k), cont)
            p0 = (s0 + 1) / (s0 + f0 + 2)
            c = p0 * (1 + w[:, 1:2]) + (1 - p0) * w[:, 0:1] if r > 1 else p0
            play = c > lam * r
            lo, hi = np.where(play, lam, lo), np.where(play, hi, lam)
        idx = 0.5 * (lo + hi)[:, 0]
        for (s, f), value in zip(roots, idx):
            table[s, f, r] = value
    return table


class Gittins(BanditAlgorithm):
    """The arm of highest finite-horizon Gittins index given the pulls left in the trial (:func:`gittins_table`)."""

    name = "gittins"

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        super().begin_trials(family, tasks, n_episodes, generator)
        self.table = torch.as_tensor(np.nan_to_num(gittins_table(n_episodes), nan=-1.0), dtype=torch.float32, device=self.s.device)

    def scores(self) -> Tensor:
        r = self.n_steps - self.t
        return self.table[self.s.long(), self.f.long(), r]


# ---------------------------------------------------------------------------------- tabular MDPs
class _MDPActor:
    """Shared bookkeeping: the step within the episode, the last state and action."""

    name = "mdp"

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        if not isinstance(family, TabularMDPs):
            raise ValueError(f"{type(self).__name__} needs a TabularMDPs family, got {family.describe()}")
        self.family, self.generator, self.h = family, generator, 0
        self.batch = family.check_tasks(tasks)
        self._rows = torch.arange(self.batch, device=tasks["reward_mean"].device)

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        self.h = (self.h + 1) % self.family.horizon


class ValueIterationOracle(_MDPActor):
    """Acts optimally knowing the task: ``argmax_a Q_h(s, a)`` of :func:`~rnnmeta.rl.mdps.value_iteration`."""

    name = "value_iteration"

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        super().begin_trials(family, tasks, n_episodes, generator)
        self.q, _ = value_iteration(tasks["reward_mean"], tasks["transitions"], family.horizon)

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return argmax_random_ties(self.q[self._rows, self.h, obs], self.generator), {}


class PSRL(_MDPActor):
    """Posterior sampling for RL (Osband, Russo & Van Roy 2013), one posterior draw per episode."""

    name = "psrl"

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        super().begin_trials(family, tasks, n_episodes, generator)
        b, s, a = self.batch, family.n_states, family.n_actions
        dev = tasks["reward_mean"].device
        self.n = torch.zeros(b, s, a, device=dev)
        self.r_sum = torch.zeros(b, s, a, device=dev)
        self.counts = torch.zeros(b, s, a, s, device=dev)
        self.last: tuple[Tensor, Tensor] | None = None

    def _resample(self) -> None:
        post_mean = (1.0 + self.r_sum) / (1.0 + self.n)  # prior N(1, 1), noise variance 1
        post_std = (1.0 / (1.0 + self.n)).sqrt()
        mu = post_mean + post_std * torch.randn(post_mean.shape, generator=self.generator, device=post_mean.device)
        g = sample_gamma(1.0 + self.counts, self.generator)
        p = g / g.sum(-1, keepdim=True)
        self.q, _ = value_iteration(mu, p, self.family.horizon)

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.last is not None and self.h != 0:  # the transition of the last step (not across a reset)
            s, a = self.last
            self.counts[self._rows, s, a, obs] += 1
        if self.h == 0:
            self._resample()
        action = argmax_random_ties(self.q[self._rows, self.h, obs], self.generator)
        self.last = (obs, action)
        return action, {}

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        s, a = self.last
        self.n[self._rows, s, a] += 1
        self.r_sum[self._rows, s, a] += reward
        super().observe(action, reward, episode_end, alive)


#: Name -> factory, for comparison configs (``baselines: [random, ucb1, gittins]``).
BASELINES = {
    "random": RandomActor,
    "greedy": Greedy,
    "epsilon_greedy": EpsilonGreedy,
    "ucb1": UCB1,
    "thompson": Thompson,
    "gittins": Gittins,
    "psrl": PSRL,
    "value_iteration": ValueIterationOracle,
}


def make_baseline(name: str):
    """The classical actor called ``name`` (a key of :data:`BASELINES`)."""
    if name not in BASELINES:
        raise ValueError(f"unknown classical algorithm {name!r}; expected one of {sorted(BASELINES)}")
    return BASELINES[name]()


__all__ = [
    "BASELINES",
    "EpsilonGreedy",
    "Gittins",
    "Greedy",
    "PSRL",
    "RandomActor",
    "Thompson",
    "UCB1",
    "ValueIterationOracle",
    "argmax_random_ties",
    "gittins_table",
    "make_baseline",
    "sample_beta",
    "sample_gamma",
]
