"""What people want to look at in robot control: adaptation curves, 2D trajectories, a video of a trial.

* :func:`episode_returns` splits each trial's reward into its episodes ``[B, n_episodes]``;
  :func:`plot_adaptation` draws mean return (95% CI band) per episode of a trial for the memory
  agents (RL^2, SNAIL: episode 1..n) or per inner gradient step for MAML (step 0..k) on one axis;
* :func:`plot_training` draws each agent's training return per episode against environment steps;
* :func:`plot_point_trajectories` draws 2D-navigation paths toward a few test goals, one line per
  episode of each trial (so adaptation shows as paths that bend toward the goal);
* :func:`record_trial` renders one trial of a MuJoCo family (``rgb_array`` frames; all its episodes or
  the chosen ones, each frame captioned) and writes a GIF (Pillow, always installed) or, when
  ``imageio-ffmpeg`` is installed, an MP4. Rendering needs an OpenGL platform; when ``MUJOCO_GL`` is
  unset, :func:`choose_mujoco_gl` picks one that needs no GPU (OSMesa, else Mesa's EGL in software).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from rnnmeta.rl.base import Tasks, seeded_generator
from rnnmeta.rl.trial import Trajectory, run_trials


def episode_returns(traj: Trajectory, horizon: int) -> Tensor:
    """``[B, n_episodes]``: each trial's total reward in each of its episodes (``T = n_episodes * horizon``)."""
    b, t = traj.rewards.shape
    if t % horizon:
        raise ValueError(f"episode_returns: a trial of {t} steps is not a whole number of episodes of horizon {horizon}")
    return traj.rewards.reshape(b, t // horizon, horizon).sum(-1)


def mean_ci(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and 95% CI half-width (1.96 std / sqrt(n)) over the first dimension of ``x [n, k]``."""
    x = x.detach().double().cpu()
    n = x.shape[0]
    std = x.std(0) if n > 1 else torch.zeros_like(x[0])
    return x.mean(0), 1.96 * std / math.sqrt(n)


def _save(fig: Any, path: Union[str, os.PathLike]) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG, 120 dpi; folders made), close it; the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _save_line_plot(fig: Any, ax: Any, path: Union[str, os.PathLike], xlabel: str, ylabel: str, title: str) -> Path:
    """Axis labels, title, grid and legend of a line plot, then :func:`_save`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_adaptation(curves: dict[str, Tensor], path: Union[str, os.PathLike], title: str = "",
                    reference: Optional[dict[str, Sequence[Optional[float]]]] = None) -> Path:
    """Mean return per episode of a trial (or per gradient step), one line with a 95% CI band per agent.

    Args:
        curves: agent -> returns ``[n_trials, k]`` (``k`` episodes, or ``k`` inner steps 0..k-1 for MAML:
            name such an agent ``"... (steps)"`` and its x positions are 0..k-1, else 1..k).
        path: the PNG to write.
        reference: optional published curves (label -> values, drawn dashed), e.g. MAML's
            ``[-40.41, -11.68, -3.33, -3.23]`` for 2D navigation; ``None`` where the source reports no value.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, returns in curves.items():
        mean, ci = mean_ci(returns)
        x = list(range(mean.numel())) if "(steps)" in name else list(range(1, mean.numel() + 1))
        ax.plot(x, mean.numpy(), marker="o", label=name)
        ax.fill_between(x, (mean - ci).numpy(), (mean + ci).numpy(), alpha=0.2)
    for name, values in (reference or {}).items():  # matplotlib leaves a gap at None
        ax.plot(list(range(len(values))), list(values), "k--", marker="x", label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save_line_plot(fig, ax, path, "episode of the trial (memory agents) / inner gradient steps (MAML)",
                           "return per episode (mean, 95% CI)", title)


def plot_training(curves: dict[str, Sequence[tuple[int, float]]], path: Union[str, os.PathLike], title: str = "") -> Path:
    """Training curves: the mean return per episode of each batch of training trials against the environment
    steps spent so far, one line per agent (``curves``: agent -> ``[(env_steps, return per episode), ...]``).

    Environment steps, not updates, are the common axis: a MAMLRL update costs a whole batch of its long
    trials, a PPO update of the memory agents a quarter of a batch of short ones.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        if points:
            steps, returns = zip(*points)
            ax.plot(steps, returns, label=name)
    return _save_line_plot(fig, ax, path, "environment steps of training", "training return per episode (batch mean)", title)


def plot_point_trajectories(traj: Trajectory, goals: Tensor, horizon: int, path: Union[str, os.PathLike],
                            trials: int = 4, title: str = "", episodes: Optional[dict[int, str]] = None) -> Path:
    """2D-navigation paths: trial ``b`` in its own colour, episode 1 dotted ... last episode solid, goal a star.

    Args:
        traj: trials of :class:`~rnnmeta.rl.navigation.PointNavigation2D` (``obs [B, T, 2]`` positions).
        goals: ``[B, 2]`` the trials' goals.
        horizon: steps per episode.
        trials: how many of the first trials to draw.
        episodes: which episodes to draw (0-based index -> legend label); all by default. For MAMLRL, the
            first episode of each chunk (``{0: "0 steps", 5: "1 step", ...}``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = traj.obs.detach().cpu()
    alive = traj.alive.detach().cpu()
    b, t = obs.shape[:2]
    n_ep = t // horizon
    styles = [":", "--", "-"]
    fig, ax = plt.subplots(figsize=(5, 5))
    chosen = episodes if episodes is not None else {e: f"episode {e + 1}" for e in range(n_ep)}
    order = sorted(e for e in chosen if 0 <= e < n_ep)
    for i in range(min(trials, b)):
        colour = f"C{i}"
        for k, e in enumerate(order):
            seg = obs[i, e * horizon:(e + 1) * horizon]
            seg = seg[alive[i, e * horizon:(e + 1) * horizon]]
            style = styles[-1] if k == len(order) - 1 else styles[min(k, len(styles) - 2)]
            ax.plot(seg[:, 0].numpy(), seg[:, 1].numpy(), style, color=colour, alpha=0.5 + 0.5 * (k + 1) / len(order),
                    label=f"trial 1, {chosen[e]}" if i == 0 else None)
        ax.plot([float(goals[i, 0])], [float(goals[i, 1])], "*", color=colour, markersize=14, markeredgecolor="k")
    ax.plot([0], [0], "ko", markersize=5)
    ax.set_xlim(-0.6, 0.6)
    ax.set_ylim(-0.6, 0.6)
    ax.set_aspect("equal")
    ax.set_title(title or "2D navigation: paths toward test goals (star), start at the origin")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


# ---------------------------------------------------------------------------------- video
def choose_mujoco_gl(environ: Optional[dict[str, str]] = None, find_library: Any = None,
                     render_nodes: Optional[Sequence[str]] = None) -> Optional[str]:
    """Set ``MUJOCO_GL`` (MuJoCo's OpenGL platform) when it is unset, to one that works on a headless machine.

    A value already set is kept. Otherwise, in this order: ``osmesa`` where ``libOSMesa`` is installed
    (``apt-get install libosmesa6``); ``egl`` where ``libEGL`` is (Mesa's ``libegl-mesa0``, or a GPU
    driver's), with ``LIBGL_ALWAYS_SOFTWARE=1`` added when the machine has no GPU render node
    (``/dev/dri/renderD*``, ``/dev/nvidia*``), so that Mesa draws on the CPU (llvmpipe) instead of
    failing to find a device. Measured on a 2-core Intel Xeon without GPU or OSMesa: MuJoCo's EGL
    context fails without that variable and renders HalfCheetah with it. Call before the first render
    (MuJoCo and Gymnasium read the variables when they create a context).

    Args:
        environ: the environment to read and change (``os.environ`` by default).
        find_library: ``ctypes.util.find_library`` by default (a name -> path or ``None``).
        render_nodes: the GPU device files present (by default the ones on this machine).

    Returns:
        ``MUJOCO_GL`` as it is now, or ``None`` where no platform was found (rendering will then fail
        with MuJoCo's own error).
    """
    import ctypes.util
    import glob

    env = os.environ if environ is None else environ
    if env.get("MUJOCO_GL"):
        return env["MUJOCO_GL"]
    find = ctypes.util.find_library if find_library is None else find_library
    if find("OSMesa"):
        env["MUJOCO_GL"] = "osmesa"
    elif find("EGL"):
        env["MUJOCO_GL"] = "egl"
        nodes = glob.glob("/dev/dri/renderD*") + glob.glob("/dev/nvidia[0-9]*") if render_nodes is None else render_nodes
        if not nodes:
            env.setdefault("LIBGL_ALWAYS_SOFTWARE", "1")
    return env.get("MUJOCO_GL")


def _caption(frame: Any, text: str) -> Any:
    """``frame`` (an ``[H, W, 3]`` uint8 array) as a Pillow image with ``text`` on a dark band at the top left."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(frame)
    if text:
        draw = ImageDraw.Draw(image)
        box = draw.textbbox((4, 4), text)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, 4), text, fill=(255, 255, 255))
    return image


def record_trial(actor: Any, family: Any, task: Tasks, n_episodes: int, path: Union[str, os.PathLike],
                 seed: int = 0, fps: int = 20, every: int = 2, size: tuple[int, int] = (320, 240),
                 episodes: Optional[dict[int, str]] = None) -> Path:
    """Run ``actor`` for one trial of ``task`` (one row) in a :class:`~rnnmeta.rl.gym_family.GymTaskFamily`
    and write every ``every``-th rendered frame to ``path`` (``.gif``, or ``.mp4`` with imageio-ffmpeg).

    The whole trial is played (the actor's memory, or MAMLRL's inner steps, need every episode), but
    only the frames of ``episodes`` are kept (0-based episode index -> caption; default every episode,
    captioned ``episode 1`` ... ``episode n``). Each kept frame carries its caption, its step and the
    episode's return so far, e.g. ``after 1 step | t=40 | return 12.3``. The family's ``make_env`` must
    accept ``render_mode`` and ``width``/``height`` keywords (the MuJoCo builders of
    :mod:`rnnmeta.rl.mujoco` do, and render from the ``track`` camera that follows the robot).
    :func:`choose_mujoco_gl` sets the OpenGL platform when ``MUJOCO_GL`` is unset. Returns the path written.

    Raises:
        TypeError: ``family`` is not a Gymnasium family.
        ValueError: an episode of ``episodes`` is outside ``0 .. n_episodes - 1``, or ``every`` < 1.
    """
    choose_mujoco_gl()
    from rnnmeta.rl.gym_family import GymBatchedEnv, GymTaskFamily

    if not isinstance(family, GymTaskFamily):
        raise TypeError(f"record_trial renders Gymnasium families, got {type(family).__name__}")
    chosen = {e: f"episode {e + 1}" for e in range(n_episodes)} if episodes is None else dict(episodes)
    outside = sorted(e for e in chosen if not 0 <= e < n_episodes)
    if outside or every < 1:
        raise ValueError(f"record_trial: episodes must lie in 0..{n_episodes - 1} and every >= 1, "
                         f"got episodes {outside or sorted(chosen)} and every={every}")
    make = functools.partial(family.make_env, render_mode="rgb_array", width=size[0], height=size[1])
    frames: list[Any] = []
    counter = {"episode": -1, "step": 0, "return": 0.0}

    def keep(env: GymBatchedEnv) -> None:
        episode, step = counter["episode"], counter["step"]
        if episode in chosen and step % every == 0:
            text = f"{chosen[episode]} | t={step} | return {counter['return']:.1f}"
            frames.append(_caption(env.vec.envs[0].render(), text))

    class _Recording(GymBatchedEnv):
        def reset(self) -> Tensor:
            obs = super().reset()
            counter.update(episode=counter["episode"] + 1, step=0, **{"return": 0.0})
            keep(self)
            return obs

        def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            out = super().step(action)
            counter["step"] += 1
            counter["return"] += float(out[1][0])
            keep(self)
            return out

    class _RecordingFamily(GymTaskFamily):
        def make(self, tasks: Tasks, generator: torch.Generator) -> GymBatchedEnv:
            env = super().make(tasks, generator)
            return _Recording(self, env.vec, env._seed, env.device)

    rec = _RecordingFamily(make, family.sample_task, family.horizon, "sync")
    rec.check_tasks = family.check_tasks  # type: ignore[method-assign]
    rec.observation_space, rec.action_space = family.observation_space, family.action_space
    try:
        with torch.no_grad():
            run_trials(actor, rec, task, n_episodes, seeded_generator(seed, "env"), seeded_generator(seed, "actor"))
    finally:
        rec.close()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".mp4":
        import imageio.v2 as imageio
        import numpy as np

        imageio.mimsave(out, [np.asarray(f) for f in frames], fps=fps)
    else:
        frames[0].save(out, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return out


__all__ = ["choose_mujoco_gl", "episode_returns", "mean_ci", "plot_adaptation", "plot_point_trajectories", "record_trial"]
