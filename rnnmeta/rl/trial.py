"""Running actors through trials, and the evaluation protocol (mean total reward per trial, 95% CI).

A trial is one task for ``n_episodes`` episodes of ``family.horizon`` steps (``T`` steps in all);
see :mod:`rnnmeta.rl.base`. :func:`run_trials` is the one loop every actor (classical or learned)
goes through, in training and in evaluation.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rnnmeta.rl.base import Actor, TaskFamily, Tasks, check_positive


@dataclass
class Trajectory:
    """What happened in a batch of ``B`` trials of ``T`` steps.

    Attributes:
        obs: ``[B, T, *obs]`` the observation before each action.
        actions: ``[B, T, *act]``.
        rewards: ``[B, T]`` (0 where not ``alive``).
        episode_end: ``[B, T]`` bool: step ``t`` was the last of its episode.
        alive: ``[B, T]`` bool: the episode had not terminated before step ``t``.
        extras: what the actor returned with each action, stacked ``[B, T, ...]`` (``logp``, ``value``).
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    episode_end: Tensor
    alive: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total_reward(self) -> Tensor:
        """``[B]`` the reward of each trial, summed over all its steps."""
        return self.rewards.sum(1)


def run_trials(actor: Actor, family: TaskFamily, tasks: Tasks, n_episodes: int, env_generator: torch.Generator,
               actor_generator: torch.Generator) -> Trajectory:
    """Run ``actor`` through one trial per task: ``n_episodes`` episodes of ``family.horizon`` steps.

    The actor's memory is reset once, by ``begin_trials``, and persists across the episodes;
    :meth:`~rnnmeta.rl.base.BatchedEnv.reset` starts each episode (the task stays). The actor
    learns each step's reward through ``observe`` after it has acted.

    Args:
        actor: any :class:`~rnnmeta.rl.base.Actor`.
        family: the task family of ``tasks``.
        tasks: ``B`` tasks.
        n_episodes: episodes per trial (>= 1).
        env_generator: the environment's randomness (same seed -> same luck for every actor).
        actor_generator: the actor's randomness (action sampling).
    """
    check_positive("run_trials", n_episodes=n_episodes)
    _check_observe(actor)
    b = family.check_tasks(tasks)
    env = family.make(tasks, env_generator)
    actor.begin_trials(family, tasks, n_episodes, actor_generator)
    horizon = family.horizon
    obs_l, act_l, rew_l, end_l, alive_l = [], [], [], [], []
    extras_l: dict[str, list[Tensor]] = {}
    for _episode in range(n_episodes):
        obs = env.reset()
        alive = torch.ones(b, dtype=torch.bool, device=obs.device)
        for h in range(horizon):
            action, extras = actor.act(obs)
            next_obs, reward, terminated = env.step(action)
            reward = torch.where(alive, reward, torch.zeros_like(reward))
            end = torch.full((b,), h == horizon - 1, dtype=torch.bool, device=obs.device)
            actor.observe(action, reward, end, alive)
            obs_l.append(obs), act_l.append(action), rew_l.append(reward), end_l.append(end), alive_l.append(alive)
            for k, v in extras.items():
                extras_l.setdefault(k, []).append(v)
            alive = alive & ~terminated
            obs = next_obs
    return Trajectory(
        obs=torch.stack(obs_l, 1),
        actions=torch.stack(act_l, 1),
        rewards=torch.stack(rew_l, 1),
        episode_end=torch.stack(end_l, 1),
        alive=torch.stack(alive_l, 1),
        extras={k: torch.stack(v, 1) for k, v in extras_l.items()},
    )


def _check_observe(actor: Actor) -> None:
    """Refuse an actor whose ``observe`` cannot take ``(action, reward, episode_end, alive)``, naming the fix."""
    try:
        inspect.signature(actor.observe).bind(None, None, None, None)
    except TypeError:
        raise TypeError(
            f"{type(actor).__name__}.observe{inspect.signature(actor.observe)} cannot take (action, reward, episode_end, "
            "alive): run_trials passes whether each step was alive (taken before its episode terminated) as a fourth "
            "argument; add `alive` to the actor's observe (see rnnmeta.rl.base.Actor)"
        ) from None
    except ValueError:  # no signature to read (a builtin): let the call itself decide
        pass


@dataclass
class Evaluation:
    """Mean total reward per trial over a fixed task set, with its 95% CI (1.96 std / sqrt(n))."""

    mean: float
    ci95: float
    trials: int
    per_trial: Tensor  # [n] float64

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci95": self.ci95, "trials": self.trials}


def summarise_rewards(per_trial: Tensor) -> Evaluation:
    x = per_trial.detach().double().cpu()
    n = x.numel()
    std = float(x.std()) if n > 1 else 0.0
    return Evaluation(mean=float(x.mean()), ci95=1.96 * std / math.sqrt(n), trials=n, per_trial=x)


@torch.no_grad()
def evaluate(actor: Actor, family: TaskFamily, tasks: Tasks, n_episodes: int, seed: int = 0, batch_trials: int = 500) -> Evaluation:
    """Total reward per trial of ``actor`` on ``tasks`` (in chunks of ``batch_trials``), mean and 95% CI.

    The environment's generator is seeded by ``(seed, "env", chunk)`` and the actor's by
    ``(seed, "actor", chunk)``: every actor evaluated with the same seed meets the same
    environment randomness (common random numbers).
    """
    from rnnmeta.rl.base import index_tasks, seeded_generator

    n = family.check_tasks(tasks)
    check_positive("evaluate", batch_trials=batch_trials)
    device = next(iter(tasks.values())).device
    totals = []
    for i, start in enumerate(range(0, n, batch_trials)):
        chunk = index_tasks(tasks, slice(start, start + batch_trials))
        traj = run_trials(
            actor, family, chunk, n_episodes,
            seeded_generator(seed, "env", i, device=device), seeded_generator(seed, "actor", i, device=device),
        )
        totals.append(traj.total_reward)
    return summarise_rewards(torch.cat(totals))


__all__ = ["Evaluation", "Trajectory", "eval_tasks", "evaluate", "run_trials", "summarise_rewards"]


def eval_tasks(family: TaskFamily, n: int, seed: int, split: str = "test") -> Tasks:
    """The fixed ``split`` tasks (``"val"`` or ``"test"``) of ``family``: ``n`` tasks drawn with ``(seed, split)``, on CPU.

    Every agent and classical algorithm of a comparison is evaluated on these (fingerprinted by
    :func:`rnnmeta.rl.base.fingerprint`).
    """
    from rnnmeta.rl.base import seeded_generator

    if split not in ("val", "test"):
        raise ValueError(f"eval_tasks: split must be 'val' or 'test', got {split!r}")
    return family.sample_tasks(n, seeded_generator(seed, split))
