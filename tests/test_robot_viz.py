"""Plots and videos of robot-control trials (issue 16): per-episode returns, adaptation curves, 2D paths, a GIF."""

from __future__ import annotations

import os

import pytest
import torch

from rnnmeta.rl.base import seeded_generator
from rnnmeta.rl.navigation import PointNavigation2D
from rnnmeta.rl.robot_viz import episode_returns, mean_ci, plot_adaptation, plot_point_trajectories
from rnnmeta.rl.trial import run_trials
from tests.helpers import skip_unless_mujoco_renders


class TowardGoal:
    """An oracle actor that steps toward the goal at half speed in episode 1 and full speed after."""

    def begin_trials(self, family, tasks, n_episodes, generator):
        self.goal, self.t, self.h = tasks["goal"], 0, family.horizon
        self.pos = torch.zeros_like(self.goal)

    def act(self, obs):
        self.pos = obs
        speed = 0.5 if self.t < self.h else 1.0
        return ((self.goal - obs) / 0.1).clamp(-1, 1) * speed, {}

    def observe(self, action, reward, episode_end, alive):
        self.t += 1


def test_episode_returns_splits_trials_and_plots_are_written(tmp_path):
    fam = PointNavigation2D(horizon=20)
    tasks = {"goal": torch.tensor([[0.3, 0.3], [-0.2, 0.4], [0.1, -0.45], [0.0, 0.2]])}
    traj = run_trials(TowardGoal(), fam, tasks, 3, seeded_generator(0), seeded_generator(1))
    per_ep = episode_returns(traj, fam.horizon)
    assert per_ep.shape == (4, 3)
    assert torch.allclose(per_ep.sum(1), traj.total_reward)
    assert (per_ep[:, 1] > per_ep[:, 0]).all() and torch.allclose(per_ep[:, 1], per_ep[:, 2])  # faster after episode 1
    mean, ci = mean_ci(per_ep)
    assert mean.shape == (3,) and (ci >= 0).all()
    with pytest.raises(ValueError, match="whole number of episodes"):
        episode_returns(traj, 7)
    a = plot_adaptation({"oracle (episodes)": per_ep, "oracle (steps)": per_ep}, tmp_path / "a.png",
                        reference={"MAML paper": [-40.41, -11.68, -3.33, -3.23], "a gap": [-50.69, 293.19, None, 315.65]})
    b = plot_point_trajectories(traj, tasks["goal"], fam.horizon, tmp_path / "t.png")
    for p in (a, b):
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_choose_mujoco_gl_keeps_a_setting_and_prefers_osmesa_then_software_egl():
    from rnnmeta.rl.robot_viz import choose_mujoco_gl

    def finder(*found):
        return lambda name: f"lib{name}.so" if name in found else None

    env = {"MUJOCO_GL": "glfw"}
    assert choose_mujoco_gl(env, finder("OSMesa", "EGL"), []) == "glfw" and env == {"MUJOCO_GL": "glfw"}
    env = {}
    assert choose_mujoco_gl(env, finder("OSMesa", "EGL"), []) == "osmesa" and env == {"MUJOCO_GL": "osmesa"}
    env = {}  # Mesa's EGL without a GPU: software rendering, or EGL finds no device
    assert choose_mujoco_gl(env, finder("EGL"), []) == "egl" and env == {"MUJOCO_GL": "egl", "LIBGL_ALWAYS_SOFTWARE": "1"}
    env = {}  # a GPU render node: EGL on the GPU
    assert choose_mujoco_gl(env, finder("EGL"), ["/dev/dri/renderD128"]) == "egl" and env == {"MUJOCO_GL": "egl"}
    env = {"LIBGL_ALWAYS_SOFTWARE": "0"}  # the user's own choice stays
    assert choose_mujoco_gl(env, finder("EGL"), []) == "egl" and env["LIBGL_ALWAYS_SOFTWARE"] == "0"
    env = {}
    assert choose_mujoco_gl(env, finder(), []) is None and env == {}


def test_caption_draws_on_a_band_at_the_top_left_only():
    import numpy as np

    from rnnmeta.rl.robot_viz import _caption

    frame = np.full((48, 64, 3), 128, dtype=np.uint8)
    out = np.asarray(_caption(frame, "episode 1 | t=0"))
    changed = (out != frame).any(-1)
    assert changed[:16].any() and not changed[20:].any()  # the text band, nothing below it
    assert (out[changed] == 0).all(-1).any() and (out[changed] > 200).all(-1).any()  # black band, light (antialiased) text
    np.testing.assert_array_equal(np.asarray(_caption(frame, "")), frame)


def test_record_trial_writes_a_gif_of_the_chosen_episodes():
    skip_unless_mujoco_renders()
    from rnnmeta.rl.classical import RandomActor
    from rnnmeta.rl.mujoco import HalfCheetahVel
    from rnnmeta.rl.robot_viz import record_trial

    from PIL import Image

    fam = HalfCheetahVel(horizon=6)
    task = {"velocity": torch.tensor([1.0])}
    out = os.path.join(os.environ.get("PYTEST_TMP", "/tmp"), f"rnnmeta_trial_{os.getpid()}.gif")
    try:
        path = record_trial(RandomActor(), fam, task, 2, out, every=2, size=(64, 48))
        with Image.open(path) as gif:  # each episode: its reset (t=0) and steps 2, 4, 6
            assert gif.size == (64, 48) and gif.n_frames == 8
        path = record_trial(RandomActor(), fam, task, 3, out, every=3, size=(64, 48), episodes={2: "last"})
        with Image.open(path) as gif:  # the third episode only: t = 0, 3, 6
            assert gif.n_frames == 3
        with pytest.raises(ValueError, match=r"episodes must lie in 0\.\.1"):
            record_trial(RandomActor(), fam, task, 2, out, episodes={2: "x"})
    finally:
        if os.path.exists(out):
            os.remove(out)
