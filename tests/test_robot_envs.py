"""Robot-control task families (issue 16): 2D navigation, the MuJoCo reward wrappers, their vectorised families.

The MuJoCo tests skip with the import error where ``mujoco`` cannot load (``pytest.skip``), never pass silently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnmeta.rl.base import seeded_generator
from rnnmeta.rl.navigation import PointNavigation2D


def mujoco_or_skip():
    try:
        from rnnmeta.rl.mujoco import require_mujoco

        return require_mujoco()
    except ImportError as err:
        pytest.skip(f"MuJoCo families skipped, mujoco cannot load: {err}")


# ---------------------------------------------------------------------------------- 2D navigation
def test_point_navigation_step_by_hand():
    fam = PointNavigation2D()
    env = fam.make({"goal": torch.tensor([[0.3, -0.2], [0.0, 0.05]])}, seeded_generator(0))
    obs = env.reset()
    assert torch.equal(obs, torch.zeros(2, 2))
    # an action of 2 is clipped to 1: a move of 0.1; -0.5 moves by -0.05
    obs, reward, done = env.step(torch.tensor([[2.0, -0.5], [0.0, 0.5]]))
    assert torch.allclose(obs, torch.tensor([[0.1, -0.05], [0.0, 0.05]]))
    expected0 = -math.hypot(0.1 - 0.3, -0.05 + 0.2)
    assert reward[0].item() == pytest.approx(expected0, abs=1e-6)
    # the second point is on its goal: reward ~0 and the episode ends (within 0.01 in both coordinates)
    assert reward[1].item() == pytest.approx(0.0, abs=1e-6)
    assert done.tolist() == [False, True]
    # absorbing after the end: no move, reward 0, terminated stays True
    obs2, reward2, done2 = env.step(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert torch.allclose(obs2[1], torch.tensor([0.0, 0.05])) and reward2[1].item() == 0.0 and done2[1].item()
    assert reward2[0].item() == pytest.approx(expected0, abs=1e-6)  # did not move: same distance
    # reset starts again at the origin with the same goals
    assert torch.equal(env.reset(), torch.zeros(2, 2))
    assert env.step(torch.zeros(2, 2))[2].tolist() == [False, False]


def test_point_navigation_squared_reward_and_standing_still():
    goal = torch.tensor([[0.4, 0.3]])
    for kind, per_step in (("distance", -0.5), ("squared_distance", -0.25)):
        fam = PointNavigation2D(reward=kind)
        env = fam.make({"goal": goal}, seeded_generator(0))
        env.reset()
        total = sum(env.step(torch.zeros(1, 2))[1] for _ in range(fam.horizon))
        assert total.item() == pytest.approx(per_step * fam.horizon, rel=1e-5)


def test_point_navigation_straight_to_goal_ends_early():
    fam = PointNavigation2D()
    goal = torch.tensor([[0.25, -0.25]])
    env = fam.make({"goal": goal}, seeded_generator(0))
    env.reset()
    total, steps = 0.0, 0
    for _ in range(fam.horizon):
        direction = (goal - env.position) / fam.max_step
        obs, r, done = env.step(direction.clamp(-1, 1))
        total += r.item()
        steps += 1
        if done.item():
            break
    assert steps == 3  # 0.1, 0.2, 0.25
    expected = -(math.hypot(0.15, 0.15) + math.hypot(0.05, 0.05) + 0.0)
    assert total == pytest.approx(expected, abs=1e-6)


def test_point_navigation_tasks_seeded_and_in_range():
    fam = PointNavigation2D()
    a = fam.sample_tasks(500, seeded_generator(3, "test"))["goal"]
    b = fam.sample_tasks(500, seeded_generator(3, "test"))["goal"]
    c = fam.sample_tasks(500, seeded_generator(4, "test"))["goal"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (500, 2) and a.min() >= -0.5 and a.max() <= 0.5
    assert a.min() < -0.45 and a.max() > 0.45  # covers the square


def test_point_navigation_bad_input():
    with pytest.raises(ValueError, match="reward must be"):
        PointNavigation2D(reward="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="goal_low < goal_high"):
        PointNavigation2D(goal_low=1.0, goal_high=0.0)
    fam = PointNavigation2D()
    with pytest.raises(ValueError, match=r"'goal' float \[B, 2\]"):
        fam.make({"goal": torch.zeros(3)}, seeded_generator(0))
    env = fam.make({"goal": torch.zeros(3, 2)}, seeded_generator(0))
    env.reset()
    with pytest.raises(ValueError, match=r"Box\(2,\)"):
        env.step(torch.zeros(3, 3))


# ---------------------------------------------------------------------------------- MuJoCo reward wrappers
def _cheetah_x(env) -> float:
    return float(env.unwrapped.data.qpos[0])


def test_half_cheetah_vel_reward_by_hand():
    mujoco_or_skip()
    from rnnmeta.rl.mujoco import make_half_cheetah_vel

    env = make_half_cheetah_vel()
    env.task = {"velocity": np.asarray(1.5)}
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.uniform(-1, 1, 6)
        x0 = _cheetah_x(env)
        _, reward, terminated, truncated, info = env.step(a)
        v = (_cheetah_x(env) - x0) / env.unwrapped.dt
        assert env.unwrapped.dt == pytest.approx(0.05)
        assert info["x_velocity"] == pytest.approx(v, rel=1e-9)
        assert reward == pytest.approx(-abs(v - 1.5) - 0.05 * float(np.sum(a**2)), rel=1e-9, abs=1e-12)
        assert not terminated and not truncated
    env.close()


def test_half_cheetah_forward_velocity_is_read_from_the_observation():
    """``task_tracking`` reads the velocity each episode ran at from HalfCheetah's observation: index 8 is qvel[0]
    (the root's x-velocity), averaged over each episode's steps after the run-up."""
    mujoco_or_skip()
    from rnnmeta.rl.mujoco import (HALF_CHEETAH_FORWARD_VELOCITY, HalfCheetahDir, HalfCheetahVel, episode_forward_velocity,
                                   make_half_cheetah_vel)

    env = make_half_cheetah_vel()
    env.task = {"velocity": np.asarray(1.0)}
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, *_ = env.step(rng.uniform(-1, 1, 6))
        assert obs[HALF_CHEETAH_FORWARD_VELOCITY] == pytest.approx(float(env.unwrapped.data.qvel[0]), rel=1e-12)
    env.close()
    horizon = 6
    obs = torch.zeros(2, 2 * horizon, 17)
    obs[..., HALF_CHEETAH_FORWARD_VELOCITY] = torch.arange(2 * 2 * horizon, dtype=torch.float32).reshape(2, 2 * horizon)
    expected = torch.tensor([[3.5, 9.5], [15.5, 21.5]])  # the mean of steps 2..5 of each episode
    torch.testing.assert_close(episode_forward_velocity(obs, horizon, run_up=2), expected)
    per_episode = obs[..., HALF_CHEETAH_FORWARD_VELOCITY].reshape(2, 2, horizon)
    torch.testing.assert_close(episode_forward_velocity(obs, horizon), per_episode[:, :, 1:].mean(-1))  # a quarter: 1 step
    with pytest.raises(ValueError, match="whole episodes of horizon 5"):
        episode_forward_velocity(obs, 5)
    with pytest.raises(ValueError, match="run_up=6"):
        episode_forward_velocity(obs, horizon, run_up=6)
    for family, key in ((HalfCheetahVel(horizon=200), "velocity"), (HalfCheetahDir(horizon=200), "direction")):
        assert family.tracked_task == key and key in family.sample_tasks(3, seeded_generator(0, "tasks"))
        assert family.task_tracking(torch.zeros(3, 400, 17)).shape == (3, 2)
        family.close()


def test_half_cheetah_dir_reward_by_hand():
    mujoco_or_skip()
    from rnnmeta.rl.mujoco import make_half_cheetah_dir

    env = make_half_cheetah_dir()
    for d in (1.0, -1.0):
        env.task = {"direction": np.asarray(d)}
        env.reset(seed=1)
        a = np.full(6, 0.7)
        x0 = _cheetah_x(env)
        _, reward, _, _, _ = env.step(a)
        v = (_cheetah_x(env) - x0) / env.unwrapped.dt
        assert reward == pytest.approx(d * v - 0.05 * 6 * 0.49, rel=1e-9)
    env.close()


def test_ant_dir_reward_by_hand():
    mujoco_or_skip()
    from rnnmeta.rl.mujoco import make_ant_dir

    env = make_ant_dir()
    u = np.array([math.cos(2.0), math.sin(2.0)])
    env.task = {"direction": u}
    env.reset(seed=2)
    a = np.linspace(-1, 1, 8)
    xy0 = env.unwrapped.data.body("torso").xpos[:2].copy()
    _, reward, terminated, _, info = env.step(a)
    vel = (env.unwrapped.data.body("torso").xpos[:2] - xy0) / env.unwrapped.dt
    contact = 5e-4 * float(np.sum(np.clip(env.unwrapped.data.cfrc_ext, -1, 1) ** 2))
    healthy = 0.2 <= float(env.unwrapped.data.qpos[2]) <= 1.0
    expected = float(u @ vel) - 0.005 * float(np.sum(a**2)) - contact + 0.05 * healthy
    assert reward == pytest.approx(expected, rel=1e-9)
    assert info["reward_contact"] == pytest.approx(-contact)
    assert terminated == (not healthy)
    env.close()


# ---------------------------------------------------------------------------------- vectorised families
def test_mujoco_family_matches_single_env_and_is_seeded():
    mujoco_or_skip()
    from rnnmeta.rl.base import seed_from
    from rnnmeta.rl.mujoco import HalfCheetahVel, make_half_cheetah_vel

    fam = HalfCheetahVel(horizon=20)
    tasks = fam.sample_tasks(3, seeded_generator(0, "tasks"))
    assert torch.equal(tasks["velocity"], fam.sample_tasks(3, seeded_generator(0, "tasks"))["velocity"])
    assert 0 <= tasks["velocity"].min() and tasks["velocity"].max() <= 2
    actions = torch.rand(20, 3, 6, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2  # some out of bounds

    def rollout(generator):
        env = fam.make(tasks, generator)
        obs = [env.reset()]
        rewards = []
        for t in range(20):
            o, r, d = env.step(actions[t])
            obs.append(o), rewards.append(r)
            assert not d.any()
        return torch.stack(obs), torch.stack(rewards)

    obs, rewards = rollout(seeded_generator(5, "env"))
    obs2, rewards2 = rollout(seeded_generator(5, "env"))
    assert torch.equal(obs, obs2) and torch.equal(rewards, rewards2)
    # copy 1 by hand: one env, seeded as the family seeds it (the generator's first draw + index)
    seed = seed_from(seeded_generator(5, "env"))
    single = make_half_cheetah_vel()
    single.task = {"velocity": tasks["velocity"][1].numpy()}
    o, _ = single.reset(seed=seed + 1)
    assert np.allclose(o, obs[0, 1].numpy(), atol=1e-6)
    for t in range(20):
        o, r, *_ = single.step(np.clip(actions[t, 1].numpy().astype(np.float64), -1, 1))
        assert r == pytest.approx(rewards[t, 1].item(), rel=1e-5, abs=1e-5)
    fam.close()


def test_mujoco_async_equals_sync():
    mujoco_or_skip()
    from rnnmeta.rl.mujoco import HalfCheetahDir

    out = []
    for mode in ("sync", "async"):
        fam = HalfCheetahDir(horizon=5, vectorization=mode)
        tasks = {"direction": torch.tensor([1.0, -1.0])}
        env = fam.make(tasks, seeded_generator(0))
        env.reset()
        out.append(torch.stack([env.step(torch.full((2, 6), 0.3))[1] for _ in range(5)]))
        fam.close()
    assert torch.allclose(out[0], out[1])
    assert (out[0][:, 0] * out[0][:, 1] < 0).any() or not torch.allclose(out[0][:, 0], out[0][:, 1])


def test_ant_dir_terminated_copy_is_absorbing():
    mujoco_or_skip()
    from rnnmeta.rl.mujoco import AntDir

    fam = AntDir(horizon=200, directions="circle")
    tasks = fam.sample_tasks(4, seeded_generator(0))
    assert torch.allclose(tasks["direction"].norm(dim=-1), torch.ones(4))
    env = fam.make(tasks, seeded_generator(0))
    env.reset()
    g = torch.Generator().manual_seed(0)
    ended_at = {}
    last = {}
    for t in range(200):
        obs, r, done = env.step(torch.rand(4, 8, generator=g) * 2 - 1)
        for b in range(4):
            if b in ended_at:
                assert r[b].item() == 0.0 and done[b].item() and torch.equal(obs[b], last[b])
            elif done[b].item():
                ended_at[b], last[b] = t, obs[b].clone()
    assert ended_at, "random actions make Ant-v5 leave its healthy height range within 200 steps"
    obs = env.reset()
    assert not env.step(torch.zeros(4, 8))[2].any()  # reset revives every copy
    fam.close()


@pytest.mark.slow  # Meta-World builds its 50 task variations per environment copy (~8 s on an idle core)
def test_metaworld_ml1_family():
    try:
        from rnnmeta.rl.gym_family import require_metaworld

        require_metaworld()
    except ImportError as err:
        pytest.skip(f"Meta-World skipped (optional extra rnnmeta[metaworld]): {err}")
    from rnnmeta.rl.gym_family import metaworld_ml1

    fam = metaworld_ml1("reach-v3", horizon=10)
    tasks = fam.sample_tasks(40, seeded_generator(0))
    assert tasks["index"].dtype == torch.int64 and 0 <= tasks["index"].min() and tasks["index"].max() < 50
    assert torch.equal(tasks["index"], fam.sample_tasks(40, seeded_generator(0))["index"])
    env = fam.make({"index": tasks["index"][:1]}, seeded_generator(0))
    obs = env.reset()
    assert obs.shape == (1, *fam.observation_space.shape)
    _, r, _ = env.step(torch.zeros(1, *fam.action_space.shape))
    assert r.shape == (1,) and torch.isfinite(r).all()
    fam.close()


def test_one_reward_gives_a_cheetahs_task_away(capsys, monkeypatch):
    """scripts/task_identifiability.py: after one random step the reward, the observed velocity and the control cost
    name the target velocity (correlation far above 0) and the direction (far above the 50% of a guess)."""
    mujoco_or_skip()
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    try:
        import task_identifiability
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(sys, "argv", ["task_identifiability.py", "--tasks", "24", "--steps", "1"])
    task_identifiability.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| HalfCheetah")]
    assert len(rows) == 2, rows
    assert float(rows[0].split("corr ")[1].split(",")[0]) > 0.7, rows[0]
    assert int(rows[1].split("right for ")[1].split("%")[0]) >= 80, rows[1]
    monkeypatch.setattr(sys, "argv", ["task_identifiability.py", "--tasks", "1"])
    with pytest.raises(SystemExit):
        task_identifiability.main()
