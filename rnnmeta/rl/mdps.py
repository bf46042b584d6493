"""Random tabular MDPs as a batched task family, and finite-horizon value iteration.

The benchmark of Duan et al. 2016 (Section 4.2) and SNAIL (Mishra et al. 2018, Table 4): ``S = 10``
states, ``A = 5`` actions, episodes of ``H = 10`` steps. A task draws, for every state and
action, a mean reward ``mu[s, a] ~ N(1, 1)`` (the reward paid is ``N(mu[s, a], 1)``) and a
transition distribution ``P[s, a] ~ Dirichlet(1, ..., 1)`` (flat). Every episode starts in a state
drawn uniformly (this library's choice; the papers do not print it), and the agent observes the
state index (``Discrete(S)``).

Randomness uses common random numbers: each step draws one normal (reward noise) and one uniform
(next state, by inverting the CDF of ``P[s, a]``) per trial, whatever the action.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnmeta.rl.base import BatchedEnv, Discrete, TaskFamily, Tasks, check_action, check_positive


class TabularMDPs(TaskFamily):
    """Random MDPs: rewards ``N(mu, 1)`` with ``mu ~ N(1, 1)``, transitions from a flat Dirichlet.

    Args:
        n_states: ``S >= 1``.
        n_actions: ``A >= 1``.
        horizon: steps per episode ``H >= 1``.

    Tasks: ``{"reward_mean": [B, S, A], "transitions": [B, S, A, S]}`` (rows sum to 1).
    """

    def __init__(self, n_states: int = 10, n_actions: int = 5, horizon: int = 10) -> None:
        check_positive("TabularMDPs", n_states=n_states, n_actions=n_actions, horizon=horizon)
        self.n_states, self.n_actions, self.horizon = n_states, n_actions, horizon
        self.observation_space = Discrete(n_states)
        self.action_space = Discrete(n_actions)

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tasks:
        check_positive("TabularMDPs.sample_tasks", n=n)
        s, a, dev = self.n_states, self.n_actions, generator.device
        mu = 1.0 + torch.randn(n, s, a, generator=generator, device=dev)
        # Dirichlet(1, ..., 1) = normalised Exp(1) draws (torch's Dirichlet takes no generator)
        e = -torch.log(torch.rand(n, s, a, s, generator=generator, device=dev).clamp_min(1e-30))
        return {"reward_mean": mu, "transitions": e / e.sum(-1, keepdim=True)}

    def check_tasks(self, tasks: Tasks) -> int:
        s, a = self.n_states, self.n_actions
        mu, p = tasks.get("reward_mean"), tasks.get("transitions")
        if mu is None or p is None or mu.shape[1:] != (s, a) or p.shape[1:] != (s, a, s) or mu.shape[0] != p.shape[0]:
            got = {k: list(v.shape) for k, v in tasks.items()}
            raise ValueError(
                f"TabularMDPs(n_states={s}, n_actions={a}) tasks need 'reward_mean' [B, {s}, {a}] and "
                f"'transitions' [B, {s}, {a}, {s}], got {got}"
            )
        return mu.shape[0]

    def make(self, tasks: Tasks, generator: torch.Generator) -> "MDPEnv":
        self.check_tasks(tasks)
        return MDPEnv(self, tasks["reward_mean"], tasks["transitions"], generator)

    def describe(self) -> str:
        return f"TabularMDPs(n_states={self.n_states}, n_actions={self.n_actions}, horizon={self.horizon})"


class MDPEnv(BatchedEnv):
    """``B`` MDPs stepped at once; see :class:`TabularMDPs`."""

    def __init__(self, family: TabularMDPs, reward_mean: Tensor, transitions: Tensor, generator: torch.Generator) -> None:
        self.family, self.generator = family, generator
        self.reward_mean, self.cdf = reward_mean, transitions.cumsum(-1)
        self.batch_size = reward_mean.shape[0]
        self._rows = torch.arange(self.batch_size, device=reward_mean.device)
        self.state = torch.zeros(self.batch_size, dtype=torch.long, device=reward_mean.device)

    def reset(self) -> Tensor:
        u = torch.rand(self.batch_size, generator=self.generator, device=self.reward_mean.device)
        self.state = (u * self.family.n_states).long().clamp_max(self.family.n_states - 1)
        return self.state

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_action(self.family.action_space, action, self.batch_size, "TabularMDPs.step")
        dev = self.reward_mean.device
        noise = torch.randn(self.batch_size, generator=self.generator, device=dev)
        u = torch.rand(self.batch_size, 1, generator=self.generator, device=dev)
        reward = self.reward_mean[self._rows, self.state, action] + noise
        cdf = self.cdf[self._rows, self.state, action]  # [B, S]
        self.state = (cdf < u).sum(-1).clamp_max(self.family.n_states - 1)
        return self.state, reward, torch.zeros(self.batch_size, dtype=torch.bool, device=dev)


def value_iteration(reward_mean: Tensor, transitions: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    """Finite-horizon value iteration (backward induction), undiscounted.

    Args:
        reward_mean: ``[B, S, A]`` expected rewards.
        transitions: ``[B, S, A, S]`` next-state distributions.
        horizon: ``H >= 1`` steps.

    Returns:
        ``(q, v)``: ``q [B, H, S, A]`` where ``q[:, h]`` is the value of acting at step ``h`` of
        the episode (``H - h`` steps to go), and ``v [B, H + 1, S]`` with ``v[:, H] = 0``.
    """
    check_positive("value_iteration", horizon=horizon)
    b, s, a = reward_mean.shape
    v = reward_mean.new_zeros(b, horizon + 1, s)
    q = reward_mean.new_zeros(b, horizon, s, a)
    for h in range(horizon - 1, -1, -1):
        q[:, h] = reward_mean + (transitions * v[:, h + 1][:, None, None, :]).sum(-1)
        v[:, h] = q[:, h].max(-1).values
    return q, v


__all__ = ["MDPEnv", "TabularMDPs", "value_iteration"]
