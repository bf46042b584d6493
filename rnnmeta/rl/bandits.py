"""Bernoulli multi-armed bandits as a batched task family (Duan et al. 2016, Section 4.1; SNAIL Table 3).

A task is ``K`` arm means drawn from U[0, 1]; pulling arm ``a`` pays 1 with probability
``means[a]``, else 0. A trial of ``N`` pulls is ``n_episodes = N`` episodes of one step each
(``horizon = 1``), so the agents' ``done`` input is 1 after every pull, as in RL^2's bandit
experiments where the observation carries nothing but the previous action and reward. The
observation is the constant ``0`` of ``Discrete(1)``.

Rewards use common random numbers: each step draws one uniform ``u [B]`` from the environment's
generator, whatever the arm, and pays ``u < means[a]``; every actor run on the same tasks with the
same generator seed meets the same luck, which narrows the differences between them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnmeta.rl.base import BatchedEnv, Discrete, TaskFamily, Tasks, check_action, check_positive


class BernoulliBandits(TaskFamily):
    """``K``-armed Bernoulli bandits with means ~ U[0, 1].

    Args:
        n_arms: ``K >= 1``.

    Tasks: ``{"means": [B, K]}``. Observation ``Discrete(1)`` (always 0), action ``Discrete(K)``, horizon 1.
    """

    def __init__(self, n_arms: int = 5) -> None:
        check_positive("BernoulliBandits", n_arms=n_arms)
        self.n_arms = n_arms
        self.observation_space = Discrete(1)
        self.action_space = Discrete(n_arms)
        self.horizon = 1

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tasks:
        check_positive("BernoulliBandits.sample_tasks", n=n)
        return {"means": torch.rand(n, self.n_arms, generator=generator, device=generator.device)}

    def check_tasks(self, tasks: Tasks) -> int:
        means = tasks.get("means")
        if means is None or means.dim() != 2 or means.shape[1] != self.n_arms:
            shape = None if means is None else list(means.shape)
            raise ValueError(f"BernoulliBandits(n_arms={self.n_arms}) tasks need 'means' [B, {self.n_arms}], got {shape}")
        return means.shape[0]

    def make(self, tasks: Tasks, generator: torch.Generator) -> "BanditEnv":
        self.check_tasks(tasks)
        return BanditEnv(self, tasks["means"], generator)

    def describe(self) -> str:
        return f"BernoulliBandits(n_arms={self.n_arms})"


class BanditEnv(BatchedEnv):
    """``B`` bandits stepped at once; see :class:`BernoulliBandits`."""

    def __init__(self, family: BernoulliBandits, means: Tensor, generator: torch.Generator) -> None:
        self.family, self.means, self.generator = family, means, generator
        self.batch_size = means.shape[0]
        self._obs = torch.zeros(self.batch_size, dtype=torch.long, device=means.device)
        self._rows = torch.arange(self.batch_size, device=means.device)

    def reset(self) -> Tensor:
        return self._obs

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        check_action(self.family.action_space, action, self.batch_size, "BernoulliBandits.step")
        u = torch.rand(self.batch_size, generator=self.generator, device=self.means.device)
        reward = (u < self.means[self._rows, action]).float()
        return self._obs, reward, torch.zeros_like(reward, dtype=torch.bool)


__all__ = ["BanditEnv", "BernoulliBandits"]
