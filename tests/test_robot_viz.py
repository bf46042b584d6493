"""Plots and videos of robot-control trials (issue 16): per-episode returns, adaptation curves, 2D paths, a GIF."""

from __future__ import annotations

import os

import pytest
import torch

from rnnmeta.rl.base import seeded_generator
from rnnmeta.rl.navigation import PointNavigation2D
from rnnmeta.rl.robot_viz import episode_returns, mean_ci, plot_adaptation, plot_point_trajectories
from rnnmeta.rl.trial import run_trials


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
                        reference={"MAML paper": [-40.41, -11.68, -3.33, -3.23]})
    b = plot_point_trajectories(traj, tasks["goal"], fam.horizon, tmp_path / "t.png")
    for p in (a, b):
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_record_trial_writes_a_gif():
    try:
        from rnnmeta.rl.mujoco import require_mujoco

        require_mujoco()
    except ImportError as err:
        pytest.skip(f"MuJoCo families skipped, mujoco cannot load: {err}")
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    from rnnmeta.rl.classical import RandomActor
    from rnnmeta.rl.mujoco import HalfCheetahVel
    from rnnmeta.rl.robot_viz import record_trial

    from rnnmeta.rl.mujoco import make_half_cheetah_vel

    try:  # can this machine render at all? (headless without libosmesa6 or a GPU: no OpenGL platform)
        probe = make_half_cheetah_vel(render_mode="rgb_array", width=32, height=24)
        probe.reset(seed=0)
        assert probe.render().shape == (24, 32, 3)
        probe.close()
    except Exception as err:
        pytest.skip(f"rendering skipped, no OpenGL platform for MUJOCO_GL={os.environ['MUJOCO_GL']} "
                    f"(apt-get install libosmesa6, or MUJOCO_GL=egl with a GPU): {type(err).__name__}: {err}")
    fam = HalfCheetahVel(horizon=6)
    out = os.path.join(os.environ.get("PYTEST_TMP", "/tmp"), f"rnnmeta_trial_{os.getpid()}.gif")
    path = record_trial(RandomActor(), fam, {"velocity": torch.tensor([1.0])}, 2, out, every=2, size=(64, 48))
    from PIL import Image

    with Image.open(path) as gif:
        assert gif.size == (64, 48) and gif.n_frames == 7  # 2 resets + 12 steps = 14 frames, every 2nd
    os.remove(path)
