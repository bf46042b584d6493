"""MuJoCo locomotion task families of MAML-RL, SNAIL, ProMP and PEARL, over Gymnasium's real simulator.

Each family is a reward wrapper over Gymnasium's ``HalfCheetah-v5`` / ``Ant-v5`` (the ``mujoco`` wheel
ships the physics engine; nothing is downloaded at run time) stepped through ``gymnasium.vector`` by
:class:`~rnnmeta.rl.gym_family.GymTaskFamily`. The wrapper replaces the environment's reward; the
dynamics, observations, reset noise and termination are Gymnasium's. Velocities come from the
simulator, as Gymnasium reports them in ``info`` (``x_velocity = (x_after - x_before) / dt``, ``dt =
0.05`` s: 5 frames of 0.01 s); ``a`` is the action applied, after clipping to ``[-1, 1]``.

=================  ===========================================  ==========================================
family             reward per step                              task, horizon, source
=================  ===========================================  ==========================================
HalfCheetahVel     ``-|v_x - v_goal| - 0.05 ||a||^2``           ``v_goal ~ U[0, 2]``, 200 steps; MAML
                                                                (Finn et al. 2017) ``HalfCheetahEnvRand``;
                                                                PEARL and ProMP use U[0, 3] (``high=3``)
HalfCheetahDir     ``d v_x - 0.05 ||a||^2``                     ``d = +-1`` (p = 1/2), 200 steps; MAML
                                                                ``HalfCheetahEnvRandDirec`` (the
                                                                forward/backward task of its Table/Fig. 5)
AntDir             ``<u, (v_x, v_y)> - 0.005 ||a||^2``          ``u = (d, 0)``, ``d = +-1`` (MAML, default)
                   ``- 5e-4 ||clip(F_ext, -1, 1)||^2 + 0.05``   or ``u = (cos t, sin t)``, ``t ~ U[0, 2 pi]``
                   (survive bonus only while healthy)            (``directions="circle"``, ProMP/PEARL's 2D
                                                                direction); 200 steps; coefficients of
                                                                rllab's ``AntEnv`` that MAML's
                                                                ``AntEnvRandDirec`` uses (PEARL/ProMP: ctrl
                                                                0.5, survive 1.0, Gymnasium's defaults)
=================  ===========================================  ==========================================

The ant's episode ends when its torso height leaves ``[0.2, 1.0]`` (Gymnasium's ``healthy_z_range``,
rllab's test); the copy is then absorbing until the next episode (see :mod:`rnnmeta.rl.gym_family`).
Observations: HalfCheetah-v5's 17 numbers; Ant-v5's 27 (positions without x, y; velocities), the
external contact forces left out (``include_cfrc_ext_in_observation=False``; Gymnasium's default adds
78 mostly-zero numbers), which the contact cost still reads from the simulator.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal, Optional

import numpy as np
import torch
from torch import Tensor

from rnnmeta.rl.base import Tasks, check_positive
from rnnmeta.rl.gym_family import GymTaskFamily, _Wrapper, require_gymnasium


def require_mujoco() -> Any:
    """``mujoco``, or an ImportError that says which extra to install and why it did not load."""
    require_gymnasium()
    try:
        import mujoco
    except Exception as err:  # ImportError, or OSError from a broken install (two mujoco versions)
        raise ImportError(
            f"the MuJoCo task families need mujoco: pip install 'rnnmeta[mujoco]' (or pip install -r "
            f"requirements-mujoco.txt); import failed with: {type(err).__name__}: {err}"
        ) from err
    return mujoco


def control_cost(action: np.ndarray, weight: float) -> float:
    """``weight * ||a||^2`` of the action applied."""
    return float(weight * np.sum(np.square(np.asarray(action, dtype=np.float64))))


# ---------------------------------------------------------------------------------- reward wrappers
class HalfCheetahVelReward(_Wrapper):
    """HalfCheetah running at a target velocity: ``r = -|v_x - v_goal| - ctrl_cost_weight ||a||^2`` (MAML).

    Task ``{"velocity": []}``. ``info`` gains ``reward_velocity`` and ``reward_ctrl`` (the two terms).
    """

    def __init__(self, env: Any, ctrl_cost_weight: float = 0.05) -> None:
        super().__init__(env)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.velocity = 0.0

    @property
    def task(self) -> dict[str, np.ndarray]:
        return {"velocity": np.asarray(self.velocity)}

    @task.setter
    def task(self, task: dict[str, np.ndarray]) -> None:
        self.velocity = float(task["velocity"])

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, _, terminated, truncated, info = self.env.step(action)
        velocity_term = -abs(float(info["x_velocity"]) - self.velocity)
        ctrl = control_cost(action, self.ctrl_cost_weight)
        info = dict(info, reward_velocity=velocity_term, reward_ctrl=-ctrl)
        return obs, velocity_term - ctrl, terminated, truncated, info


class HalfCheetahDirReward(_Wrapper):
    """HalfCheetah running forward or backward: ``r = d v_x - ctrl_cost_weight ||a||^2``, ``d = +-1`` (MAML).

    Task ``{"direction": []}`` (+1 or -1). ``info`` gains ``reward_run`` and ``reward_ctrl``.
    """

    def __init__(self, env: Any, ctrl_cost_weight: float = 0.05) -> None:
        super().__init__(env)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.direction = 1.0

    @property
    def task(self) -> dict[str, np.ndarray]:
        return {"direction": np.asarray(self.direction)}

    @task.setter
    def task(self, task: dict[str, np.ndarray]) -> None:
        self.direction = float(task["direction"])

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, _, terminated, truncated, info = self.env.step(action)
        run = self.direction * float(info["x_velocity"])
        ctrl = control_cost(action, self.ctrl_cost_weight)
        info = dict(info, reward_run=run, reward_ctrl=-ctrl)
        return obs, run - ctrl, terminated, truncated, info


class AntDirReward(_Wrapper):
    """Ant running in a direction ``u``: ``r = <u, v_xy> - c ||a||^2 - k ||clip(F_ext, -1, 1)||^2 + s [healthy]``.

    Task ``{"direction": [2]}`` (a unit vector). ``info`` gains ``reward_run``, ``reward_ctrl``,
    ``reward_contact`` and ``reward_survive``.
    """

    def __init__(self, env: Any, ctrl_cost_weight: float = 0.005, contact_cost_weight: float = 5e-4,
                 survive_reward: float = 0.05) -> None:
        super().__init__(env)
        self.ctrl_cost_weight, self.contact_cost_weight = float(ctrl_cost_weight), float(contact_cost_weight)
        self.survive_reward = float(survive_reward)
        self.direction = np.array([1.0, 0.0])

    @property
    def task(self) -> dict[str, np.ndarray]:
        return {"direction": self.direction.copy()}

    @task.setter
    def task(self, task: dict[str, np.ndarray]) -> None:
        d = np.asarray(task["direction"], dtype=np.float64).reshape(-1)
        if d.shape != (2,):
            raise ValueError(f"AntDir task 'direction' must be a 2-vector, got shape {d.shape}")
        self.direction = d

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, _, terminated, truncated, info = self.env.step(action)
        ant = self.env.unwrapped
        run = float(self.direction @ np.array([info["x_velocity"], info["y_velocity"]]))
        ctrl = control_cost(action, self.ctrl_cost_weight)
        contact = self.contact_cost_weight * float(np.sum(np.square(np.clip(ant.data.cfrc_ext, -1.0, 1.0))))
        survive = self.survive_reward * float(ant.is_healthy)
        info = dict(info, reward_run=run, reward_ctrl=-ctrl, reward_contact=-contact, reward_survive=survive)
        return obs, run - ctrl - contact + survive, terminated, truncated, info


# ---------------------------------------------------------------------------------- environment builders
#: The camera the builders render from: the ``track`` camera of Gymnasium's HalfCheetah and Ant models, which
#: follows the robot's centre of mass (Gymnasium's default free camera stays put, and a running cheetah
#: leaves the picture within a few seconds).
RENDER_CAMERA = "track"


def make_half_cheetah_vel(ctrl_cost_weight: float = 0.05, render_mode: str | None = None, width: int = 480,
                          height: int = 480) -> Any:
    """One ``HalfCheetah-v5`` (the class, without ``gym.make``'s time limit: the family sets the horizon) with the goal-velocity reward."""
    require_mujoco()
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    return HalfCheetahVelReward(HalfCheetahEnv(render_mode=render_mode, width=width, height=height,
                                               camera_name=RENDER_CAMERA), ctrl_cost_weight)


def make_half_cheetah_dir(ctrl_cost_weight: float = 0.05, render_mode: str | None = None, width: int = 480,
                          height: int = 480) -> Any:
    """One ``HalfCheetah-v5`` with the forward/backward reward."""
    require_mujoco()
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    return HalfCheetahDirReward(HalfCheetahEnv(render_mode=render_mode, width=width, height=height,
                                               camera_name=RENDER_CAMERA), ctrl_cost_weight)


def make_ant_dir(ctrl_cost_weight: float = 0.005, contact_cost_weight: float = 5e-4, survive_reward: float = 0.05,
                 render_mode: str | None = None, width: int = 480, height: int = 480) -> Any:
    """One ``Ant-v5`` (27-number observation, terminates when unhealthy) with the direction reward."""
    require_mujoco()
    from gymnasium.envs.mujoco.ant_v5 import AntEnv

    env = AntEnv(include_cfrc_ext_in_observation=False, render_mode=render_mode, width=width, height=height,
                 camera_name=RENDER_CAMERA)
    return AntDirReward(env, ctrl_cost_weight, contact_cost_weight, survive_reward)


# ---------------------------------------------------------------------------------- task samplers
def sample_velocity(low: float, high: float, n: int, generator: torch.Generator) -> Tasks:
    """``{"velocity": [n]}`` uniform in ``[low, high]``."""
    return {"velocity": low + (high - low) * torch.rand(n, generator=generator, device=generator.device)}


def sample_sign(n: int, generator: torch.Generator) -> Tasks:
    """``{"direction": [n]}``: +1 or -1 with probability 1/2 each."""
    return {"direction": torch.randint(0, 2, (n,), generator=generator, device=generator.device).float() * 2 - 1}


def sample_direction_2d(directions: str, n: int, generator: torch.Generator) -> Tasks:
    """``{"direction": [n, 2]}``: ``(+-1, 0)`` (``"forward_backward"``) or ``(cos t, sin t)``, ``t ~ U[0, 2 pi]``."""
    if directions == "forward_backward":
        d = sample_sign(n, generator)["direction"]
        return {"direction": torch.stack([d, torch.zeros_like(d)], -1)}
    t = 2 * math.pi * torch.rand(n, generator=generator, device=generator.device)
    return {"direction": torch.stack([t.cos(), t.sin()], -1)}


# ---------------------------------------------------------------------------------- families
#: Where the forward velocity (``qvel[0]``, the root's x-velocity) sits in HalfCheetah-v5's observation
#: (``qpos[1:]``, 8 numbers, then ``qvel``, 9).
HALF_CHEETAH_FORWARD_VELOCITY = 8


def episode_forward_velocity(obs: Tensor, horizon: int, run_up: Optional[int] = None) -> Tensor:
    """``[B, n_episodes]``: each episode's mean forward velocity over its steps after ``run_up`` (default the first
    quarter: 50 of MAML's 200), from HalfCheetah observations ``obs [B, n_episodes * horizon, 17]`` (the cheetah
    starts at rest, so the first steps say little about the speed it settles at)."""
    b, t = obs.shape[:2]
    run_up = horizon // 4 if run_up is None else run_up
    if t % horizon or not 0 <= run_up < horizon:
        raise ValueError(f"episode_forward_velocity: need whole episodes of horizon {horizon} and 0 <= run_up < horizon, "
                         f"got {t} steps and run_up={run_up}")
    velocity = obs[..., HALF_CHEETAH_FORWARD_VELOCITY].reshape(b, t // horizon, horizon)
    return velocity[:, :, run_up:].mean(-1)


class _ForwardVelocityTracking:
    """HalfCheetah families: :meth:`task_tracking` is each episode's forward velocity, to hold against
    ``tasks[self.tracked_task]``."""

    horizon: int
    tracked_task: str

    def task_tracking(self, obs: Tensor) -> Tensor:
        """``[B, n_episodes]``: the velocity each episode ran at (:func:`episode_forward_velocity`)."""
        return episode_forward_velocity(obs, self.horizon)


class HalfCheetahVel(_ForwardVelocityTracking, GymTaskFamily):
    """HalfCheetah goal velocity (MAML): ``v_goal ~ U[low, high]``, reward ``-|v_x - v_goal| - 0.05 ||a||^2``.

    Args:
        horizon: steps per episode (MAML: 200).
        low: smallest target velocity (MAML: 0).
        high: largest target velocity (MAML: 2; PEARL/ProMP: 3).
        ctrl_cost_weight: the control cost's coefficient (MAML: 0.05 = 0.5 * 0.1).
        vectorization: ``"sync"`` or ``"async"`` ``gymnasium.vector``.

    Tasks ``{"velocity": [B]}``; observation ``Box((17,))``; action ``Box((6,), -1, 1)``.
    """

    def __init__(self, horizon: int = 200, low: float = 0.0, high: float = 2.0, ctrl_cost_weight: float = 0.05,
                 vectorization: Literal["sync", "async"] = "sync") -> None:
        if not low <= high:
            raise ValueError(f"HalfCheetahVel: low <= high required, got low={low}, high={high}")
        self.low, self.high, self.ctrl_cost_weight = float(low), float(high), float(ctrl_cost_weight)
        super().__init__(functools.partial(make_half_cheetah_vel, self.ctrl_cost_weight),
                         functools.partial(sample_velocity, self.low, self.high), horizon, vectorization)

    def check_tasks(self, tasks: Tasks) -> int:
        v = tasks.get("velocity")
        if v is None or v.dim() != 1 or not v.is_floating_point():
            raise ValueError(f"HalfCheetahVel tasks need 'velocity' float [B], got {None if v is None else list(v.shape)}")
        return v.shape[0]

    def describe(self) -> str:
        return f"HalfCheetahVel(U[{self.low:g}, {self.high:g}], horizon={self.horizon})"

    #: the task parameter that :meth:`task_tracking` is held against (a faster target: a faster run)
    tracked_task = "velocity"


class HalfCheetahDir(_ForwardVelocityTracking, GymTaskFamily):
    """HalfCheetah forward/backward (MAML): ``d = +-1``, reward ``d v_x - 0.05 ||a||^2``.

    Tasks ``{"direction": [B]}`` (+-1); observation ``Box((17,))``; action ``Box((6,), -1, 1)``.
    """

    def __init__(self, horizon: int = 200, ctrl_cost_weight: float = 0.05,
                 vectorization: Literal["sync", "async"] = "sync") -> None:
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        super().__init__(functools.partial(make_half_cheetah_dir, self.ctrl_cost_weight), sample_sign, horizon,
                         vectorization)

    def check_tasks(self, tasks: Tasks) -> int:
        d = tasks.get("direction")
        if d is None or d.dim() != 1 or not d.is_floating_point():
            raise ValueError(f"HalfCheetahDir tasks need 'direction' float [B] (+-1), got {None if d is None else list(d.shape)}")
        return d.shape[0]

    def describe(self) -> str:
        return f"HalfCheetahDir(horizon={self.horizon})"

    #: the task parameter that :meth:`task_tracking` is held against (+1: run forward, -1: backward)
    tracked_task = "direction"


class AntDir(GymTaskFamily):
    """Ant goal direction: forward/backward (MAML, default) or any direction in the plane (ProMP/PEARL).

    Args:
        horizon: steps per episode (MAML: 200).
        directions: ``"forward_backward"`` (``u = (+-1, 0)``) or ``"circle"`` (``u = (cos t, sin t)``,
            ``t ~ U[0, 2 pi]``).
        ctrl_cost_weight, contact_cost_weight, survive_reward: rllab's AntEnv coefficients by default.
        vectorization: ``"sync"`` or ``"async"``.

    Tasks ``{"direction": [B, 2]}`` (unit vectors); observation ``Box((27,))``; action ``Box((8,), -1, 1)``.
    """

    def __init__(self, horizon: int = 200, directions: Literal["forward_backward", "circle"] = "forward_backward",
                 ctrl_cost_weight: float = 0.005, contact_cost_weight: float = 5e-4, survive_reward: float = 0.05,
                 vectorization: Literal["sync", "async"] = "sync") -> None:
        if directions not in ("forward_backward", "circle"):
            raise ValueError(f"AntDir: directions must be 'forward_backward' or 'circle', got {directions!r}")
        check_positive("AntDir", horizon=horizon)
        self.directions = directions
        super().__init__(functools.partial(make_ant_dir, ctrl_cost_weight, contact_cost_weight, survive_reward),
                         functools.partial(sample_direction_2d, directions), horizon, vectorization)

    def check_tasks(self, tasks: Tasks) -> int:
        d = tasks.get("direction")
        if d is None or d.dim() != 2 or d.shape[1] != 2 or not d.is_floating_point():
            raise ValueError(f"AntDir tasks need 'direction' float [B, 2], got {None if d is None else list(d.shape)}")
        return d.shape[0]

    def describe(self) -> str:
        return f"AntDir({self.directions}, horizon={self.horizon})"


__all__ = [
    "HALF_CHEETAH_FORWARD_VELOCITY",
    "RENDER_CAMERA",
    "AntDir",
    "AntDirReward",
    "HalfCheetahDir",
    "HalfCheetahDirReward",
    "HalfCheetahVel",
    "HalfCheetahVelReward",
    "episode_forward_velocity",
    "make_ant_dir",
    "make_half_cheetah_dir",
    "make_half_cheetah_vel",
    "require_mujoco",
    "sample_direction_2d",
    "sample_sign",
    "sample_velocity",
]
