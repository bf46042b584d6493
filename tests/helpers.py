"""Shared test utilities: random few-shot tasks, a short meta-training run on real Omniglot, finite-difference checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT_ROOT = REPO.parent / "shared" / "data" / "omniglot"


def image_task(b: int = 2, n_way: int = 3, k: int = 2, m: int = 5, side: int = 16, dtype: torch.dtype = torch.float32,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random ``n_way``-way ``k``-shot image task batch: ``support_x [b, n_way*k, 1, side, side]`` uniform in
    [0, 1), ``support_y [b, n_way*k]`` (each label ``k`` times, shuffled), ``query_x [b, m, 1, side, side]``."""
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(b, n_way * k, 1, side, side, generator=g).to(dtype)
    sy = torch.stack([torch.randperm(n_way * k, generator=g) % n_way for _ in range(b)])
    qx = torch.rand(b, m, 1, side, side, generator=g).to(dtype)
    return sx, sy, qx


def flat_task(b: int = 2, n_way: int = 3, k: int = 2, m: int = 5, d: int = 6,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As :func:`image_task` with standard-normal feature vectors of width ``d`` in place of images."""
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(b, n_way * k, d, generator=g)
    sy = torch.stack([torch.randperm(n_way * k, generator=g) % n_way for _ in range(b)])
    qx = torch.randn(b, m, d, generator=g)
    return sx, sy, qx


def assert_queries_answered_independently(learner, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                                          atol: float = 1e-6) -> None:
    """Each query's answer depends on the support set and that query alone: it stays when the other queries
    change, asked one at a time, and under a permutation of the queries; and it moves with its own input."""
    m = qx.shape[1]
    with torch.no_grad():
        base = learner(sx, sy, qx)
        changed = qx.clone()
        changed[:, 1:] = torch.rand_like(changed[:, 1:])
        moved = learner(sx, sy, changed)
        one_by_one = torch.cat([learner(sx, sy, qx[:, j : j + 1]) for j in range(m)], dim=1)
        perm = torch.randperm(m, generator=torch.Generator().manual_seed(0))
        permuted = learner(sx, sy, qx[:, perm])
    torch.testing.assert_close(moved[:, 0], base[:, 0], rtol=0, atol=atol)
    torch.testing.assert_close(one_by_one, base, rtol=0, atol=atol)
    torch.testing.assert_close(permuted, base[:, perm], rtol=0, atol=atol)
    assert not torch.allclose(moved[:, 1:], base[:, 1:]), "a query's answer must depend on its own input"


def assert_adapt_reads_the_support_once(learner, predictor_type: type, sx: torch.Tensor, sy: torch.Tensor,
                                        qx: torch.Tensor, atol: float = 1e-6):
    """``learner.adapt(sx, sy)`` is a ``predictor_type`` that answers as ``learner(sx, sy, qx)`` does, for any subset of
    the queries, without reading the support tensors again (they are overwritten after ``adapt``), and refuses a
    query batch of another task count. Returns the predictor."""
    with torch.no_grad():
        expected = learner(sx, sy, qx)
        sx_c, sy_c = sx.clone(), sy.clone()
        predict = learner.adapt(sx_c, sy_c)
        assert isinstance(predict, predictor_type)
        sx_c.uniform_()  # the predictor must not look at the support tensors again
        sy_c.fill_(0)
        torch.testing.assert_close(predict(qx), expected, rtol=0, atol=atol)
        torch.testing.assert_close(predict(qx[:, 2:4]), expected[:, 2:4], rtol=0, atol=atol)
    with pytest.raises(ValueError, match="query_x"):
        predict(qx[:1])
    return predict


def omniglot_root_or_skip() -> Path:
    """The shared Omniglot folder; skip (or fail under CI=true) when it is absent."""
    if (OMNIGLOT_ROOT / "images_background.zip").exists():
        return OMNIGLOT_ROOT
    msg = (
        f"Omniglot not found at {OMNIGLOT_ROOT}: place images_background.zip and images_evaluation.zip "
        "there (or run with rnnmeta.data.Omniglot(download=True) once)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def short_omniglot_run(
    learner: pl.LightningModule,
    n_way: int = 5,
    k_shot: int = 1,
    q_queries: int = 5,
    meta_batch_size: int = 8,
    steps: int = 100,
    test_episodes: int = 100,
    seed: int = 0,
    gradient_clip_val: float = 0.0,
) -> float:
    """Meta-train ``learner`` for ``steps`` iterations on Omniglot (Vinyals split) and return test accuracy."""
    from rnnmeta.data import EpisodicDataModule, Omniglot

    root = omniglot_root_or_skip()
    pl.seed_everything(seed, workers=True)
    dm = EpisodicDataModule(
        dataset=Omniglot(root=str(root)),
        n_way=n_way,
        k_shot=k_shot,
        q_queries=q_queries,
        meta_batch_size=meta_batch_size,
        eval_batch_size=25,
        train_batches_per_epoch=steps,
        val_episodes=25,
        test_episodes=test_episodes,
        seed=seed,
    )
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=gradient_clip_val or None,
    )
    trainer.fit(learner, datamodule=dm)
    (result,) = trainer.test(learner, datamodule=dm, verbose=False)
    return float(result["test/acc"])


def finite_difference_grad(fn, params: list[torch.Tensor], eps: float = 1e-6) -> list[torch.Tensor]:
    """Central finite differences of the scalar ``fn()`` with respect to each tensor in ``params`` (float64)."""
    grads = []
    for p in params:
        g = torch.zeros_like(p)
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            plus = float(fn())
            flat[i] = old - eps
            minus = float(fn())
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def skip_unless_mujoco_renders() -> str:
    """Skip unless MuJoCo loads and can render here (``choose_mujoco_gl``'s platform); returns ``MUJOCO_GL``."""
    try:
        from rnnmeta.rl.mujoco import require_mujoco

        require_mujoco()
    except ImportError as err:
        pytest.skip(f"MuJoCo families skipped, mujoco cannot load: {err}")
    from rnnmeta.rl.mujoco import make_half_cheetah_vel
    from rnnmeta.rl.robot_viz import choose_mujoco_gl

    platform = choose_mujoco_gl()
    try:  # can this machine render at all? (no libOSMesa, libEGL or GPU: no OpenGL platform)
        probe = make_half_cheetah_vel(render_mode="rgb_array", width=32, height=24)
        probe.reset(seed=0)
        assert probe.render().shape == (24, 32, 3)
        probe.close()
    except Exception as err:
        pytest.skip(f"rendering skipped, no OpenGL platform for MUJOCO_GL={platform} "
                    f"(apt-get install libosmesa6 or libegl-mesa0): {type(err).__name__}: {err}")
    return str(platform)
