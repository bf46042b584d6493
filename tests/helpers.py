"""Shared test utilities: a short meta-training run on real Omniglot, finite-difference checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT_ROOT = REPO.parent / "shared" / "data" / "omniglot"


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
