"""2D point navigation, the MAML paper's meta-RL benchmark (Finn et al. 2017, Section 5.3), batched in torch.

A point starts at the origin of the plane and must reach a goal it does not see. A task is a goal
``g ~ U[-0.5, 0.5]^2``; the observation is the point's position ``[2]``; an action ``a in [-1, 1]^2``
moves the point by ``max_step * a`` (``max_step = 0.1``), so the displacement per step is clipped to
``[-0.1, 0.1]`` per coordinate as in the paper. Episodes last ``horizon = 100`` steps and end early once
the point is within ``0.01`` of the goal in both coordinates.

Which definition, exactly. The paper's text says "the reward is the negative squared distance to the
goal", but the authors' code (``maml_rl``, ``PointEnvRandGoal``) pays the negative *Euclidean* distance
``-||x - g||`` after the move, and its printed returns (-40.41 before adaptation, -3.23 after three
steps) are those of the Euclidean distance: a policy that drifts near the start for 100 steps collects
about ``-100 * E||g||`` = -38 with the distance but -17 with its square. So the default is
``reward="distance"``, the code's; ``reward="squared_distance"`` gives the text's. The same code ends
the episode when ``|x_i - g_i| < 0.01`` for both coordinates (a box, not a disc) and feeds the policy
actions through rllab's ``normalize`` wrapper, which maps ``[-1, 1]`` onto ``[-0.1, 0.1]`` and clips:
the ``[-1, 1]`` action space here is that wrapper. After the episode ends the environment is absorbing
(reward 0, observation unchanged) until :meth:`PointNavigationEnv.reset`, as :mod:`rnnmeta.rl.base` asks.

Everything is a tensor ``[B, ...]`` on the device of the tasks; no randomness is drawn while stepping.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from rnnmeta.rl.base import BatchedEnv, Box, TaskFamily, Tasks, check_action, check_positive


class PointNavigation2D(TaskFamily):
    """Goals in a square, a point that moves at most ``max_step`` per coordinate and step (MAML 2D navigation).

    Args:
        horizon: steps per episode (MAML: 100).
        goal_low: lower bound of each goal coordinate (MAML: -0.5).
        goal_high: upper bound of each goal coordinate (MAML: 0.5).
        max_step: displacement for an action of 1 (MAML: 0.1); actions are clipped to ``[-1, 1]``.
        success_tolerance: the episode ends when both coordinates are within this of the goal (MAML: 0.01).
        reward: ``"distance"`` (``-||x - g||``, the authors' code and printed returns) or
            ``"squared_distance"`` (``-||x - g||^2``, the paper's text).

    Tasks: ``{"goal": [B, 2]}``. Observation ``Box((2,))`` (the position), action ``Box((2,), -1, 1)``.
    """

    def __init__(
        self,
        horizon: int = 100,
        goal_low: float = -0.5,
        goal_high: float = 0.5,
        max_step: float = 0.1,
        success_tolerance: float = 0.01,
        reward: Literal["distance", "squared_distance"] = "distance",
    ) -> None:
        check_positive("PointNavigation2D", horizon=horizon)
        if not goal_low < goal_high:
            raise ValueError(f"PointNavigation2D: goal_low < goal_high required, got goal_low={goal_low}, goal_high={goal_high}")
        if not max_step > 0:
            raise ValueError(f"PointNavigation2D: max_step must be > 0, got max_step={max_step}")
        if not success_tolerance >= 0:
            raise ValueError(f"PointNavigation2D: success_tolerance must be >= 0, got success_tolerance={success_tolerance}")
        if reward not in ("distance", "squared_distance"):
            raise ValueError(f"PointNavigation2D: reward must be 'distance' or 'squared_distance', got reward={reward!r}")
        self.horizon = horizon
        self.goal_low, self.goal_high = float(goal_low), float(goal_high)
        self.max_step = float(max_step)
        self.success_tolerance = float(success_tolerance)
        self.reward = reward
        self.observation_space = Box((2,))
        self.action_space = Box((2,), -1.0, 1.0)

    def sample_tasks(self, n: int, generator: torch.Generator) -> Tasks:
        """``{"goal": [n, 2]}`` uniform in ``[goal_low, goal_high]^2``, drawn from ``generator`` on its device."""
        check_positive("PointNavigation2D.sample_tasks", n=n)
        u = torch.rand(n, 2, generator=generator, device=generator.device)
        return {"goal": self.goal_low + (self.goal_high - self.goal_low) * u}

    def check_tasks(self, tasks: Tasks) -> int:
        goal = tasks.get("goal")
        if goal is None or goal.dim() != 2 or goal.shape[1] != 2 or not goal.is_floating_point():
            got = None if goal is None else f"{goal.dtype} {list(goal.shape)}"
            raise ValueError(f"PointNavigation2D tasks need 'goal' float [B, 2], got {got}")
        return goal.shape[0]

    def make(self, tasks: Tasks, generator: torch.Generator) -> "PointNavigationEnv":
        self.check_tasks(tasks)
        return PointNavigationEnv(self, tasks["goal"])

    def describe(self) -> str:
        return f"PointNavigation2D(horizon={self.horizon}, reward={self.reward})"


class PointNavigationEnv(BatchedEnv):
    """``B`` points, one goal each; see :class:`PointNavigation2D`.

    Attributes:
        position: ``[B, 2]`` the current positions (read by plots of trajectories).
    """

    def __init__(self, family: PointNavigation2D, goal: Tensor) -> None:
        self.family, self.goal = family, goal.float()
        self.batch_size = goal.shape[0]
        self.position = torch.zeros_like(self.goal)
        self.done = torch.zeros(self.batch_size, dtype=torch.bool, device=goal.device)

    def reset(self) -> Tensor:
        """Every point back at the origin; returns ``obs [B, 2]``."""
        self.position = torch.zeros_like(self.goal)
        self.done = torch.zeros_like(self.done)
        return self.position.clone()

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Move by ``max_step * clip(action, -1, 1)``; returns ``(obs [B, 2], reward [B], terminated [B])``."""
        check_action(self.family.action_space, action, self.batch_size, "PointNavigation2D.step")
        f = self.family
        alive = ~self.done
        move = f.max_step * action.to(self.position).clamp(-1.0, 1.0)
        self.position = torch.where(alive[:, None], self.position + move, self.position)
        diff = self.position - self.goal
        sq = diff.pow(2).sum(-1)
        reward = -sq.sqrt() if f.reward == "distance" else -sq
        reward = torch.where(alive, reward, torch.zeros_like(reward))
        reached = (diff.abs() < f.success_tolerance).all(-1)
        self.done = self.done | reached
        return self.position.clone(), reward, self.done.clone()


__all__ = ["PointNavigation2D", "PointNavigationEnv"]
