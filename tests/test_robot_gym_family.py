"""GymTaskFamily over a tiny Gymnasium environment (tests/gym_envs.py: a user's own robot), and RunningNorm.

Needs gymnasium (the ``mujoco`` extra); skipped with the import error where it is absent.
"""

from __future__ import annotations

import io

import pytest
import torch

from rnnmeta.rl.base import Box, seeded_generator
from rnnmeta.rl.normalization import RunningNorm

gym = pytest.importorskip("gymnasium", reason="GymTaskFamily needs gymnasium: pip install 'rnnmeta[mujoco]'")

from rnnmeta.rl.gym_family import GymTaskFamily  # noqa: E402
from tests.gym_envs import NoTask, Reach1D, sample_target  # noqa: E402


def reach_family(**kwargs) -> GymTaskFamily:
    return GymTaskFamily(Reach1D, sample_target, horizon=kwargs.pop("horizon", 10), **kwargs)


def test_gym_family_spaces_steps_and_absorbing_end():
    fam = reach_family()
    assert fam.observation_space == Box((1,), -10.0, 10.0) and fam.action_space == Box((1,), -1.0, 1.0)
    tasks = {"target": torch.tensor([0.3, -0.3, 0.0])}
    env = fam.make(tasks, seeded_generator(0))
    obs = env.reset()
    assert obs.shape == (3, 1) and obs.dtype == torch.float32 and obs.abs().max() <= 0.05
    x0 = obs[:, 0].double()
    # copy 0 moves right by 0.2 (an action of 5 is clipped to 1); copy 1 left by 0.1; copy 2 stays
    obs, r, done = env.step(torch.tensor([[5.0], [-0.5], [0.0]]))
    x1 = x0 + torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64)
    assert torch.allclose(obs[:, 0].double(), x1, atol=1e-6)
    assert torch.allclose(r.double(), -(x1 - tasks["target"].double()).abs(), atol=1e-6)
    assert not done.any()
    for _ in range(5):  # copy 0 walks through the wall at |x| > 1 on the 6th move right
        obs, r, done = env.step(torch.tensor([[1.0], [0.0], [0.0]]))
    assert done.tolist() == [True, False, False]
    last = obs[0].clone()
    obs, r, done = env.step(torch.tensor([[-1.0], [0.0], [0.0]]))
    assert done[0] and r[0] == 0 and torch.equal(obs[0], last)  # absorbing until reset
    assert not done[1:].any() and (r[1:] != 0).all()
    obs = env.reset()
    assert obs.abs().max() <= 0.05 and not env.step(torch.zeros(3, 1))[2].any()
    fam.close()


def test_gym_family_seeded_reuses_vectors_and_async_equals_sync():
    rewards = {}
    for mode in ("sync", "async"):
        fam = reach_family(vectorization=mode)
        tasks = fam.sample_tasks(4, seeded_generator(1, "tasks"))
        out = []
        for _ in range(2):  # the same generator seed twice: the same start noise, the same rewards
            env = fam.make(tasks, seeded_generator(7, "env"))
            env.reset()
            out.append(torch.stack([env.step(torch.full((4, 1), 0.5))[1] for _ in range(3)]))
        assert torch.equal(out[0], out[1])
        assert len(fam._vectors) == 1  # one vector env per batch size, reused
        other = fam.make(tasks, seeded_generator(8, "env"))
        other.reset()
        assert not torch.equal(torch.stack([other.step(torch.full((4, 1), 0.5))[1] for _ in range(3)]), out[0])
        rewards[mode] = out[0]
        fam.close()
    assert torch.allclose(rewards["sync"], rewards["async"])


def test_gym_family_bad_input():
    with pytest.raises(ValueError, match="no 'task' attribute"):
        GymTaskFamily(NoTask, sample_target, horizon=5)
    with pytest.raises(ValueError, match="vectorization must be"):
        GymTaskFamily(Reach1D, sample_target, horizon=5, vectorization="threads")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        GymTaskFamily(Reach1D, sample_target, horizon=0)
    fam = GymTaskFamily(Reach1D, lambda n, g: [0.0] * n, horizon=5)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match=r"must return dict\[str, Tensor\]"):
        fam.sample_tasks(2, seeded_generator(0))
    fam = reach_family()
    env = fam.make({"target": torch.zeros(2)}, seeded_generator(0))
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.zeros(2, 1))
    env.reset()
    with pytest.raises(ValueError, match=r"Box\(1,\)"):
        env.step(torch.zeros(2, 2))
    fam.close()


def test_gym_family_pickles_without_its_environments():
    import pickle

    fam = reach_family(horizon=3)
    fam.make({"target": torch.zeros(2)}, seeded_generator(0)).reset()
    copy = pickle.loads(pickle.dumps(fam))
    assert copy._vectors == {} and copy.horizon == 3 and fam._vectors
    fam.close()


# ---------------------------------------------------------------------------------- RunningNorm
def test_running_norm_chunks_equal_all_at_once_and_mask():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(7, 30, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([5.0, -2.0, 0.0])
    mask = torch.rand(7, 30, generator=g) > 0.3
    norm = RunningNorm(3)
    assert torch.equal(norm(data[0].float()), data[0].float().clamp(-10, 10))  # identity before any update
    for i in range(7):
        norm.update(data[i], mask[i])
    kept = data[mask]
    assert norm.count.item() == kept.shape[0]
    assert torch.allclose(norm.mean, kept.mean(0), atol=1e-12)
    assert torch.allclose(norm.var, kept.var(0, unbiased=False), atol=1e-10)
    z = norm(kept.float())
    assert torch.allclose(z.double().mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(z.double().std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-4)
    assert norm(torch.tensor([[1e6, 0.0, 0.0]])).max() == 10.0  # clipped
    with pytest.raises(ValueError, match="must end in 3"):
        norm.update(torch.zeros(4, 2))


def test_running_norm_statistics_survive_a_state_dict_round_trip():
    norm = RunningNorm(2)
    norm.update(torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]]))
    buf = io.BytesIO()
    torch.save(norm.state_dict(), buf)
    buf.seek(0)
    fresh = RunningNorm(2)
    fresh.load_state_dict(torch.load(buf))
    x = torch.tensor([[2.0, 3.0]])
    assert torch.equal(fresh(x), norm(x)) and fresh.count.item() == 3
    assert not torch.equal(RunningNorm(2)(x), norm(x))
