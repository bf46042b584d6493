"""The meta-RL contract: task families, their batched environments, trials, and actors.

Meta-reinforcement learning as in RL^2 (Duan et al. 2016, "RL^2: Fast Reinforcement Learning via
Slow Reinforcement Learning"), SNAIL (Mishra et al. 2018) and MAML-RL (Finn et al. 2017):

* a **task family** (:class:`TaskFamily`) draws *tasks* (a bandit's arm means, an MDP's rewards and
  transitions, a goal position, a target velocity) and builds a **batched environment**
  (:class:`BatchedEnv`) that steps ``B`` independent trials at once, one task each;
* a **trial** is one task for ``n_episodes`` episodes of ``family.horizon`` steps each, so
  ``T = n_episodes * horizon`` steps in all. An agent's memory persists across the episodes of a
  trial and is reset between trials (:func:`rnnmeta.rl.trial.run_trials` does both);
* an **actor** (:class:`Actor`) acts in a batch of trials step by step: the classical algorithms
  (:mod:`rnnmeta.rl.classical`) and the learned agents (:mod:`rnnmeta.rl.agent`) alike.

Everything is a torch tensor with the batch of trials first; families step on CPU or GPU (the
device of the task tensors) and draw randomness only from the ``torch.Generator`` they are given.

**Tasks** are a ``dict[str, Tensor]`` whose tensors share the leading trial dimension ``B``
(:data:`Tasks`): e.g. ``{"means": [B, K]}`` for :class:`~rnnmeta.rl.bandits.BernoulliBandits`,
``{"reward_mean": [B, S, A], "transitions": [B, S, A, S]}`` for
:class:`~rnnmeta.rl.mdps.TabularMDPs`. A fixed, seeded set of test tasks is shared by every agent
and identified by :func:`fingerprint`.

**Episode boundaries.** Episodes within a trial are aligned: every trial's episode ``e`` spans steps
``e * horizon .. (e + 1) * horizon - 1``. :func:`~rnnmeta.rl.trial.run_trials` calls
:meth:`BatchedEnv.reset` at each boundary (the task stays the same) and sets the ``episode_end``
flag of the last step of each episode; the agents receive that flag, shifted by one step, as their
``done`` input. An environment whose episodes can end early (a fallen robot) reports
``terminated[b] = True`` from then on and must stay *absorbing* for that trial until the next
reset: reward 0, an unchanged observation; :func:`run_trials` records ``alive`` masks so the steps
after a termination count for nothing.

**How a continuous-action family plugs in** (2D point navigation, MuJoCo through
``gymnasium.vector``, any Gymnasium env; issue 16):

1. Subclass :class:`TaskFamily`: set ``observation_space = Box(shape=(d_obs,), low, high)`` and
   ``action_space = Box(shape=(d_act,), low, high)``, ``horizon`` (steps per episode), and implement
   ``sample_tasks(n, generator)`` returning the per-trial task parameters (``{"goal": [n, 2]}``,
   ``{"velocity": [n]}``).
2. Implement ``make(tasks, generator)`` returning a :class:`BatchedEnv` whose ``reset()`` returns
   ``obs [B, d_obs]`` float and whose ``step(action [B, d_act])`` returns ``(obs [B, d_obs], reward
   [B], terminated [B] bool)``. A Gymnasium-backed env wraps a ``gymnasium.vector`` env of ``B``
   copies, sets each copy's task at ``make``, seeds it from ``generator``
   (:func:`seed_from`), converts numpy to torch, and turns a copy that terminated into an absorbing
   one until ``reset()`` (gymnasium's autoreset must not start a new episode mid-trial).
3. Nothing else changes: :func:`~rnnmeta.rl.trial.run_trials`, the agents (their input encoder
   reads :func:`space_width` / :func:`encode`, their policy head is a Gaussian for a ``Box``
   action space, see :mod:`rnnmeta.rl.agent`), the data module and ``rnnmeta compare`` take any
   family. Classical algorithms declare which spaces they accept and raise otherwise.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol, Union, runtime_checkable

import torch
from torch import Tensor

#: Per-trial task parameters: name -> tensor ``[B, ...]`` (all on one device, same ``B``).
Tasks = dict[str, Tensor]


# ---------------------------------------------------------------------------------- spaces
@dataclass(frozen=True)
class Discrete:
    """``n`` choices ``0..n-1``; as a tensor ``[B]`` int64 (agents see it one-hot, width ``n``)."""

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"Discrete space needs n >= 1 choices, got n={self.n!r}")


@dataclass(frozen=True)
class Box:
    """Real vectors of ``shape`` within ``[low, high]``; as a tensor ``[B, *shape]`` float."""

    shape: tuple[int, ...]
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if len(self.shape) < 1 or any(int(s) < 1 for s in self.shape):
            raise ValueError(f"Box space needs a non-empty shape of positive sizes, got shape={self.shape!r}")
        if not self.low < self.high:
            raise ValueError(f"Box space needs low < high, got low={self.low}, high={self.high}")


Space = Union[Discrete, Box]


def space_width(space: Space) -> int:
    """Features an agent reads for one value of ``space``: ``n`` (one-hot) or ``prod(shape)``."""
    if isinstance(space, Discrete):
        return space.n
    return int(math.prod(space.shape))


def encode(space: Space, x: Tensor) -> Tensor:
    """Values ``x`` of ``space`` ``[*lead]`` (Discrete) or ``[*lead, *shape]`` (Box) as features ``[*lead, width]``."""
    if isinstance(space, Discrete):
        return torch.nn.functional.one_hot(x.long(), space.n).float()
    lead = x.shape[: x.dim() - len(space.shape)]
    return x.float().reshape(*lead, -1)


def check_action(space: Space, action: Tensor, batch: int, where: str) -> None:
    """Refuse an action batch that does not belong to ``space`` (shape, dtype or range), naming it."""
    if isinstance(space, Discrete):
        if action.shape != (batch,) or action.dtype != torch.int64:
            raise ValueError(
                f"{where}: actions of Discrete({space.n}) must be int64 [B={batch}], got {action.dtype} {list(action.shape)}"
            )
        if action.numel() and (int(action.min()) < 0 or int(action.max()) >= space.n):
            raise ValueError(f"{where}: actions must lie in 0..{space.n - 1}, got {int(action.min())}..{int(action.max())}")
    else:
        if tuple(action.shape) != (batch, *space.shape) or not action.is_floating_point():
            raise ValueError(
                f"{where}: actions of Box{space.shape} must be float [B={batch}, {', '.join(map(str, space.shape))}], "
                f"got {action.dtype} {list(action.shape)}"
            )


# ---------------------------------------------------------------------------------- tasks
def task_batch_size(tasks: Tasks) -> int:
    """The trial count ``B`` shared by every tensor of ``tasks``; an error names any mismatch."""
    if not tasks:
        raise ValueError("tasks must hold at least one tensor")
    sizes = {name: t.shape[0] for name, t in tasks.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"task tensors must share their first (trial) dimension, got {sizes}")
    return next(iter(sizes.values()))


def index_tasks(tasks: Tasks, index: Union[slice, Tensor]) -> Tasks:
    """The trials ``index`` of ``tasks`` (a slice or an index tensor)."""
    return {name: t[index] for name, t in tasks.items()}


def tasks_to(tasks: Tasks, device: Union[str, torch.device]) -> Tasks:
    return {name: t.to(device) for name, t in tasks.items()}


def fingerprint(tasks: Tasks) -> str:
    """A 12-hex-digit hash of the task tensors (names, shapes, dtypes, bytes): the same tasks, the same print."""
    h = hashlib.sha256()
    for name in sorted(tasks):
        t = tasks[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:12]


def seeded_generator(seed: int, *keys: Union[int, str], device: Union[str, torch.device] = "cpu") -> torch.Generator:
    """A generator seeded by ``(seed, *keys)`` (e.g. ``(seed, "test")``, ``(seed, rank, batch)``): independent streams."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def seed_from(generator: torch.Generator) -> int:
    """An integer seed drawn from ``generator`` (to seed numpy or Gymnasium environments from it)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())


# ---------------------------------------------------------------------------------- families
class BatchedEnv(ABC):
    """``B`` environments stepped together, one task each. Built by :meth:`TaskFamily.make`.

    Attributes:
        batch_size: ``B``.
    """

    batch_size: int

    @abstractmethod
    def reset(self) -> Tensor:
        """Start a new episode in every trial (same tasks); returns ``obs [B, *obs]``."""

    @abstractmethod
    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Apply ``action [B, *act]``; returns ``(obs [B, *obs], reward [B] float, terminated [B] bool)``.

        A terminated trial stays absorbing (reward 0, unchanged observation) until :meth:`reset`.
        """


class TaskFamily(ABC):
    """A distribution over tasks and the batched environment of a batch of them.

    Attributes:
        observation_space: :class:`Discrete` or :class:`Box`.
        action_space: :class:`Discrete` or :class:`Box`.
        horizon: steps per episode (>= 1).
    """

    observation_space: Space
    action_space: Space
    horizon: int

    @abstractmethod
    def sample_tasks(self, n: int, generator: torch.Generator) -> Tasks:
        """``n`` tasks drawn with ``generator`` (on its device): :data:`Tasks` with first dimension ``n``."""

    @abstractmethod
    def make(self, tasks: Tasks, generator: torch.Generator) -> BatchedEnv:
        """The environment of ``tasks``, drawing its randomness (rewards, transitions) from ``generator``."""

    def check_tasks(self, tasks: Tasks) -> int:
        """``B``, after checking that ``tasks`` hold what :meth:`sample_tasks` gives (override to check more)."""
        return task_batch_size(tasks)

    def describe(self) -> str:
        """A short name for tables, e.g. ``BernoulliBandits(n_arms=5)``."""
        return type(self).__name__

    def task_features(self, tasks: Tasks) -> Tensor:
        """The tasks as one float vector each, ``[B, P]``: every tensor of ``tasks`` flattened, keys in sorted order
        (bandits: the arm means; MDPs: the reward means and transition probabilities; navigation: the goal).

        Read only by a privileged critic (``privileged_critic`` of :class:`~rnnmeta.rl.agent.SequenceAgent`), never
        by a policy. Override to describe a task better than its raw parameters."""
        b = self.check_tasks(tasks)
        return torch.cat([torch.as_tensor(tasks[name]).reshape(b, -1).float() for name in sorted(tasks)], dim=-1)


def check_positive(owner: str, **values: int) -> None:
    """Refuse a setting that is not an integer >= 1, naming it (``n_arms=0``, ``horizon=0``, ``n_episodes=0``)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {name} must be an integer >= 1, got {name}={value!r}")


# ---------------------------------------------------------------------------------- actors
@runtime_checkable
class Actor(Protocol):
    """Anything that acts in a batch of trials: classical algorithms and (wrapped) learned agents.

    :func:`rnnmeta.rl.trial.run_trials` calls ``begin_trials`` once per batch of trials (memory is
    reset there and nowhere else), then per step ``act`` and ``observe``. ``observe`` is the only
    way an actor learns a reward, and it comes after ``act`` for that step: no actor sees a reward
    before acting on it.
    """

    def begin_trials(self, family: TaskFamily, tasks: Tasks, n_episodes: int, generator: torch.Generator) -> None:
        """Forget everything: a batch of trials of ``n_episodes`` episodes starts (``tasks`` only for oracles)."""

    def act(self, obs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Actions ``[B, *act]`` for observations ``[B, *obs]``, and extras to record (``{"logp": [B]}``...)."""

    def observe(self, action: Tensor, reward: Tensor, episode_end: Tensor, alive: Tensor) -> None:
        """The reward ``[B]`` of the last action, whether that step ended an episode ``[B]`` bool, and
        whether it was ``alive`` ``[B]`` bool: taken before its episode terminated (after a termination
        the environment is absorbing until the episode's last step, and those steps' rewards are 0)."""


__all__ = [
    "Actor",
    "BatchedEnv",
    "Box",
    "Discrete",
    "Space",
    "TaskFamily",
    "Tasks",
    "check_action",
    "check_positive",
    "encode",
    "fingerprint",
    "index_tasks",
    "seed_from",
    "seeded_generator",
    "space_width",
    "task_batch_size",
    "tasks_to",
]
