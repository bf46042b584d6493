"""A tiny Gymnasium environment with a task parameter (a user's own robot, as GymTaskFamily takes it), shared by tests.

A plain module, not a test module: test modules import it after ``pytest.importorskip("gymnasium")``,
so that no test imports another test module (pytest rewrites a test module's asserts when it is first
imported, and that import inside a running test hit a CPython 3.11 parser error).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


class Reach1D(gym.Env):
    """A point on a line that must reach a hidden target: ``x += 0.2 a``, reward ``-|x - target|``.

    Starts near 0 (noise from the env's own seeded generator); ends when ``|x| > wall``.
    The task is ``{"target": []}``.
    """

    def __init__(self, wall: float = 1.0) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.wall, self.target, self.x = wall, 0.0, 0.0

    @property
    def task(self) -> dict:
        return {"target": np.asarray(self.target)}

    @task.setter
    def task(self, task: dict) -> None:
        self.target = float(task["target"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-0.05, 0.05))
        return np.array([self.x]), {}

    def step(self, action):
        self.x += 0.2 * float(np.asarray(action).reshape(-1)[0])
        return np.array([self.x]), -abs(self.x - self.target), abs(self.x) > self.wall, False, {}


class NoTask(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (1,))


def sample_target(n: int, generator: torch.Generator) -> dict:
    return {"target": torch.rand(n, generator=generator, device=generator.device) - 0.5}
