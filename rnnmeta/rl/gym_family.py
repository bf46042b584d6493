"""Any Gymnasium environment whose task is set by a parameter, as a batched task family.

A user brings their own robot: a function that builds one Gymnasium environment, and a function that
draws tasks (a goal, a mass, a friction) as tensors. :class:`GymTaskFamily` steps ``B`` copies through
``gymnasium.vector`` (synchronous in this process, or asynchronous in worker processes), one task per
copy, and presents them as the :class:`~rnnmeta.rl.base.BatchedEnv` every agent and
:func:`~rnnmeta.rl.trial.run_trials` use::

    import gymnasium as gym, torch
    from rnnmeta.rl.gym_family import GymTaskFamily

    class HeavyPendulum(gym.Wrapper):            # the task: the pole's mass
        @property
        def task(self): ...
        @task.setter
        def task(self, task):                    # task: {"mass": numpy array of shape []}
            self.env.unwrapped.m = float(task["mass"])

    def make_env():
        return HeavyPendulum(gym.make("Pendulum-v1"))

    def sample_task(n, generator):
        return {"mass": 0.5 + torch.rand(n, generator=generator, device=generator.device)}

    family = GymTaskFamily(make_env, sample_task, horizon=200)

**The task contract.** Each copy receives its task as ``env.task = {name: numpy array}`` (row ``b``
of every task tensor), through ``VectorEnv.set_attr``, which sets the attribute on the outermost
wrapper that has it; a wrapper with a ``task`` property is the usual way (see
:mod:`rnnmeta.rl.mujoco`). ``make_env`` must be picklable for ``vectorization="async"`` (a
module-level function or a ``functools.partial`` of one).

**Episodes.** ``gymnasium.vector`` runs with autoreset disabled: a copy that terminates (or is
truncated by its own time limit) before the family's ``horizon`` becomes absorbing, reward 0 and its
last observation repeated, until the next :meth:`GymBatchedEnv.reset`, as :mod:`rnnmeta.rl.base`
asks; the copy itself is reset at once so that the vector can keep stepping it (those steps are
discarded). Actions are clipped to the environment's action bounds before stepping.

**Seeding.** :meth:`GymTaskFamily.make` draws one integer from the generator it is given
(:func:`~rnnmeta.rl.base.seed_from`) and seeds copy ``b`` with ``seed + b`` at the first reset; later
resets continue each copy's own random stream. The same generator seed gives the same rollouts for
the same actions.

**Reuse.** Building ``B`` MuJoCo copies (and, asynchronously, ``B`` processes) costs far more than a
trial's first steps, so the family keeps one vector environment per batch size and reuses it with new
tasks at every :meth:`make`; :meth:`GymTaskFamily.close` (or garbage collection) ends them.

Meta-World ML1 (Yu et al. 2019) through the optional ``metaworld`` package: :func:`metaworld_ml1`.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

import numpy as np
import torch
from torch import Tensor

from rnnmeta.rl.base import BatchedEnv, Box, Discrete, Space, TaskFamily, Tasks, check_action, check_positive, seed_from

try:  # the optional `mujoco` extra; the classes below need it only when used
    import gymnasium as _gym

    _Wrapper: Any = _gym.Wrapper
except ImportError:  # pragma: no cover - depends on the install
    _gym, _Wrapper = None, object


def require_gymnasium() -> Any:
    """``gymnasium``, or an ImportError that says which extra to install."""
    try:
        import gymnasium
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            f"rnnmeta.rl Gymnasium families need gymnasium: pip install 'rnnmeta[mujoco]' "
            f"(or pip install -r requirements-mujoco.txt); import failed with: {err}"
        ) from err
    return gymnasium


def space_from_gym(space: Any, what: str) -> tuple[Space, Optional[np.ndarray], Optional[np.ndarray]]:
    """The :mod:`rnnmeta.rl.base` space of a Gymnasium ``Box`` or ``Discrete``, and a Box's per-coordinate bounds.

    The rnnmeta ``Box`` carries one scalar ``low``/``high``: the loosest of the coordinates' bounds
    (``min(low)``, ``max(high)``); the exact per-coordinate bounds come back beside it for clipping.
    """
    gym = require_gymnasium()
    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise ValueError(f"{what}: Discrete spaces must start at 0, got start={int(space.start)}")
        return Discrete(int(space.n)), None, None
    if isinstance(space, gym.spaces.Box):
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        return Box(tuple(int(s) for s in space.shape), float(low.min()), float(high.max())), low, high
    raise ValueError(f"{what}: only gymnasium Box and Discrete spaces are supported, got {space!r}")


class GymTaskFamily(TaskFamily):
    """``B`` copies of a Gymnasium environment, one task each, stepped through ``gymnasium.vector``.

    Args:
        make_env: builds one environment (no arguments); it or one of its wrappers has a settable
            ``task`` attribute that takes ``{name: numpy array}`` (one trial's row of the tasks).
        sample_task: ``(n, generator) -> Tasks``: ``n`` tasks as tensors ``[n, ...]`` drawn from the
            ``torch.Generator`` (on its device).
        horizon: steps per episode (the family's, whatever the environment's own time limit).
        vectorization: ``"sync"`` (all copies in this process, ``SyncVectorEnv``) or ``"async"`` (one
            worker process per copy, ``AsyncVectorEnv``); measure which is faster on your machine
            (``scripts/benchmark_rl.py``).

    Tasks: whatever ``sample_task`` returns. Spaces: those of the environment ``make_env`` builds.
    """

    def __init__(
        self,
        make_env: Callable[[], Any],
        sample_task: Callable[[int, torch.Generator], Tasks],
        horizon: int,
        vectorization: Literal["sync", "async"] = "sync",
    ) -> None:
        check_positive(type(self).__name__, horizon=horizon)
        if vectorization not in ("sync", "async"):
            raise ValueError(f"{type(self).__name__}: vectorization must be 'sync' or 'async', got {vectorization!r}")
        require_gymnasium()
        self.make_env, self.sample_task, self.horizon, self.vectorization = make_env, sample_task, horizon, vectorization
        probe = make_env()
        try:
            if not hasattr(probe, "task") and not _has_wrapper_attr(probe, "task"):
                raise ValueError(
                    f"{type(self).__name__}: the environment from make_env has no 'task' attribute to set a task "
                    f"with; wrap it in a gymnasium.Wrapper with a 'task' property (see rnnmeta.rl.gym_family)"
                )
            self.observation_space, _, _ = space_from_gym(probe.observation_space, f"{type(self).__name__} observation space")
            self.action_space, self._act_low, self._act_high = space_from_gym(probe.action_space, f"{type(self).__name__} action space")
        finally:
            probe.close()
        self._vectors: dict[int, Any] = {}

    # ------------------------------------------------------------------ TaskFamily
    def sample_tasks(self, n: int, generator: torch.Generator) -> Tasks:
        check_positive(f"{type(self).__name__}.sample_tasks", n=n)
        tasks = self.sample_task(n, generator)
        if not isinstance(tasks, dict) or not all(isinstance(t, Tensor) for t in tasks.values()):
            raise ValueError(f"{type(self).__name__}: sample_task must return dict[str, Tensor], got {type(tasks).__name__}")
        if self.check_tasks(tasks) != n:
            raise ValueError(f"{type(self).__name__}: sample_task({n}) returned {self.check_tasks(tasks)} tasks")
        return tasks

    def make(self, tasks: Tasks, generator: torch.Generator) -> "GymBatchedEnv":
        b = self.check_tasks(tasks)
        vec = self.vector_env(b)
        rows = {k: v.detach().cpu().numpy() for k, v in tasks.items()}
        vec.set_attr("task", [{k: v[i] for k, v in rows.items()} for i in range(b)])
        device = next(iter(tasks.values())).device
        return GymBatchedEnv(self, vec, seed_from(generator), device)

    def describe(self) -> str:
        name = getattr(self.make_env, "__name__", None) or getattr(getattr(self.make_env, "func", None), "__name__", "env")
        return f"{type(self).__name__}({name}, horizon={self.horizon}, {self.vectorization})"

    # ------------------------------------------------------------------ vector environments
    def vector_env(self, batch_size: int) -> Any:
        """The (cached) ``gymnasium.vector`` environment of ``batch_size`` copies, autoreset disabled."""
        vec = self._vectors.get(batch_size)
        if vec is None:
            require_gymnasium()
            from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

            cls = SyncVectorEnv if self.vectorization == "sync" else AsyncVectorEnv
            vec = cls([self.make_env] * batch_size, autoreset_mode=AutoresetMode.DISABLED)
            self._vectors[batch_size] = vec
        return vec

    def close(self) -> None:
        """End every vector environment (and its worker processes)."""
        for vec in self._vectors.values():
            try:
                vec.close()
            except Exception:  # pragma: no cover - closing during interpreter exit
                pass
        self._vectors = {}

    def __del__(self) -> None:
        if getattr(self, "_vectors", None):
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_vectors"] = {}  # environments (and their processes) are not copied
        return state

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """``action`` clipped to the environment's per-coordinate bounds (Box); unchanged for Discrete."""
        if self._act_low is None:
            return action
        return np.clip(action, self._act_low, self._act_high)


def _has_wrapper_attr(env: Any, name: str) -> bool:
    has = getattr(env, "has_wrapper_attr", None)
    return bool(has(name)) if has is not None else False


class GymBatchedEnv(BatchedEnv):
    """A ``gymnasium.vector`` environment as a :class:`~rnnmeta.rl.base.BatchedEnv`; see :class:`GymTaskFamily`.

    Observations come back as float32 tensors ``[B, *obs]`` (int64 ``[B]`` for Discrete) on ``device``;
    rewards ``[B]`` float32; ``terminated [B]`` bool stays True after a copy ended until :meth:`reset`.
    """

    def __init__(self, family: GymTaskFamily, vec: Any, seed: int, device: torch.device) -> None:
        self.family, self.vec, self.device = family, vec, device
        self.batch_size = vec.num_envs
        self._seed: Optional[int] = seed
        self._obs: Optional[Tensor] = None
        self._alive = np.ones(self.batch_size, dtype=bool)

    def _to_obs(self, obs: np.ndarray) -> Tensor:
        t = torch.as_tensor(np.asarray(obs), device=self.device)
        return t.long() if isinstance(self.family.observation_space, Discrete) else t.float()

    def reset(self) -> Tensor:
        if self._seed is not None:
            obs, _ = self.vec.reset(seed=[self._seed + i for i in range(self.batch_size)])
            self._seed = None
        else:
            obs, _ = self.vec.reset()
        self._alive = np.ones(self.batch_size, dtype=bool)
        self._obs = self._to_obs(obs)
        return self._obs.clone()

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self._obs is None:
            raise RuntimeError(f"{self.family.describe()}: step() before reset()")
        check_action(self.family.action_space, action, self.batch_size, f"{type(self.family).__name__}.step")
        a = action.detach().cpu().numpy()
        a = a.astype(np.int64) if isinstance(self.family.action_space, Discrete) else self.family.clip_action(a.astype(np.float64))
        obs, reward, terminated, truncated, _ = self.vec.step(a)
        alive = self._alive
        ended = np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        new_obs = self._to_obs(obs)
        keep = torch.as_tensor(~alive, device=self.device)
        new_obs = torch.where(keep.view(-1, *([1] * (new_obs.dim() - 1))), self._obs, new_obs)
        reward = np.where(alive, np.asarray(reward, dtype=np.float64), 0.0)
        self._alive = alive & ~ended
        if ended.any():  # autoreset is off: reset the copies so the vector can step them; their steps are discarded
            self.vec.reset(options={"reset_mask": ended})
        self._obs = new_obs
        return (
            new_obs.clone(),
            torch.as_tensor(reward, dtype=torch.float32, device=self.device),
            torch.as_tensor(~self._alive, device=self.device),
        )


# ---------------------------------------------------------------------------------- Meta-World
def require_metaworld() -> Any:
    """``metaworld``, or an ImportError naming the extra and the import error."""
    try:
        import metaworld
    except Exception as err:  # ImportError, or OSError from a broken mujoco install
        raise ImportError(
            f"Meta-World tasks need the optional metaworld package: pip install 'rnnmeta[metaworld]' "
            f"(or pip install -r requirements-metaworld.txt; it pins mujoco 3.3.0, the version metaworld 3.1.1 "
            f"requires); import failed with: {type(err).__name__}: {err}"
        ) from err
    return metaworld


class MetaWorldTask(_Wrapper):
    """A Meta-World ML1 environment whose ``task`` attribute selects one of the benchmark's task variations.

    Meta-World's tasks are opaque objects (``ml1.train_tasks``); here a task is their index ``{"index": []}``.
    Built by :func:`metaworld_ml1` (module level, so it pickles for asynchronous vectors).
    """

    def __init__(self, env_name: str, split: Literal["train", "test"] = "train", seed: int = 0) -> None:
        mw = require_metaworld()
        ml1 = mw.ML1(env_name, seed=seed)
        classes = ml1.train_classes if split == "train" else ml1.test_classes
        self.variations = ml1.train_tasks if split == "train" else ml1.test_tasks
        env = classes[env_name]()
        env.set_task(self.variations[0])
        super().__init__(env)
        self._task: dict[str, np.ndarray] = {"index": np.asarray(0)}

    @property
    def task(self) -> dict[str, np.ndarray]:
        return self._task

    @task.setter
    def task(self, task: dict[str, np.ndarray]) -> None:
        index = int(task["index"])
        if not 0 <= index < len(self.variations):
            raise ValueError(f"Meta-World task index must lie in 0..{len(self.variations) - 1}, got {index}")
        self._task = {"index": np.asarray(index)}
        self.env.set_task(self.variations[index])


def metaworld_ml1(env_name: str = "reach-v3", split: Literal["train", "test"] = "train", horizon: int = 500,
                  vectorization: Literal["sync", "async"] = "sync", seed: int = 0) -> GymTaskFamily:
    """Meta-World ML1 (Yu et al. 2019): one manipulation skill (``env_name``), its 50 goal variations as tasks.

    Tasks ``{"index": [B]}`` int64, drawn uniformly over the split's variations; Meta-World's own reward
    (its ``max_path_length`` is 500). Needs ``pip install 'rnnmeta[metaworld]'``.
    """
    import functools

    require_metaworld()
    n_variations = 50  # ML1: 50 goal variations per split (Yu et al. 2019); MetaWorldTask checks the index

    return GymTaskFamily(
        functools.partial(MetaWorldTask, env_name, split, seed),
        functools.partial(_uniform_index, n_variations),
        horizon=horizon,
        vectorization=vectorization,
    )


def _uniform_index(n_variations: int, n: int, generator: torch.Generator) -> Tasks:
    return {"index": torch.randint(0, n_variations, (n,), generator=generator, device=generator.device)}


__all__ = ["GymBatchedEnv", "GymTaskFamily", "MetaWorldTask", "metaworld_ml1", "require_gymnasium", "require_metaworld", "space_from_gym"]
