"""Safe loading: truncated or corrupt checkpoints and checkpoints of another learner get clear errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from rnnmeta.checkpoint import CorruptCheckpointError, check_checkpoint_file
from rnnmeta.cli import build_cli
from rnnmeta.data import EpisodicDataModule, Sinusoid
from rnnmeta.learners import MAML, LSTMLearner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def maml_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of a regression MAML after 2 training steps on sinusoid tasks."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    dm = EpisodicDataModule(Sinusoid(), n_way=5, k_shot=5, q_queries=5, meta_batch_size=4, train_batches_per_epoch=2,
                            val_episodes=4, test_episodes=4, eval_batch_size=4)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu",
                         default_root_dir=str(folder))
    trainer.fit(MAML(kind="regression", inner_lr=0.01), datamodule=dm)
    path = folder / "maml.ckpt"
    trainer.save_checkpoint(path)
    return path


def _damaged(source: Path, folder: Path, how: str) -> Path:
    data = bytearray(source.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    elif how == "not-a-checkpoint":
        data = bytearray(b"this is a text file, not a torch.save archive\n" * 50)
    elif how == "flipped-byte":  # inside the stored tensor data: the zip directory is intact, a CRC is not
        with zipfile.ZipFile(source) as archive:
            info = max(archive.infolist(), key=lambda i: i.file_size)
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.file_size // 2
        data[offset] ^= 0xFF
    path = folder / f"{how}.ckpt"
    path.write_bytes(bytes(data))
    return path


def test_a_good_checkpoint_passes_and_loads_with_weights_only(maml_checkpoint):
    assert check_checkpoint_file(maml_checkpoint) == maml_checkpoint
    saved = torch.load(maml_checkpoint, weights_only=True)
    assert saved["rnnmeta"]["learner"] == "rnnmeta.learners.maml.MAML"


@pytest.mark.parametrize("how", ["truncated", "empty", "not-a-checkpoint", "flipped-byte"])
def test_damaged_checkpoint_is_refused_naming_the_file(maml_checkpoint, tmp_path, how):
    path = _damaged(maml_checkpoint, tmp_path, how)
    with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {path}.*truncated or corrupt; use another checkpoint"):
        check_checkpoint_file(path)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*nope\.ckpt does not exist"):
        check_checkpoint_file(tmp_path / "nope.ckpt")


def test_rnnmeta_test_refuses_a_truncated_checkpoint_before_loading(maml_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _damaged(maml_checkpoint, tmp_path, "truncated")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt"):
        build_cli(["test", "--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--trainer.logger=false",
                   "--trainer.enable_progress_bar=false", f"--ckpt_path={path}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_checkpoint_of_another_learner_is_refused_by_name(maml_checkpoint):
    dm = EpisodicDataModule(Sinusoid(), n_way=5, k_shot=5, q_queries=5, test_episodes=4, eval_batch_size=4)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(ValueError, match=r"saved from rnnmeta\.learners\.maml\.MAML .*loaded into .*LSTMLearner"):
        trainer.test(LSTMLearner(kind="regression"), datamodule=dm, ckpt_path=str(maml_checkpoint))


@pytest.mark.parametrize("other, key", [(dict(n_way=3), "n_way"), (dict(kind="regression"), "kind")])
def test_checkpoint_of_another_n_way_or_kind_is_refused(other, key):
    checkpoint: dict = {}
    MAML(n_way=5).on_save_checkpoint(checkpoint)
    with pytest.raises(ValueError, match=rf"with {key}=.*but it is being loaded into .* with {key}="):
        MAML(**other).on_load_checkpoint(checkpoint)
    MAML(n_way=5).on_load_checkpoint(checkpoint)  # the same setup loads


def test_with_several_processes_the_checkpoint_resumes_rank_0s_random_draws_only():
    """What README promises for DDP: the checkpoint holds rank 0's random states; rank 0 resumes its
    random draws exactly, every other rank keeps the states seeding gave it (with a warning)."""
    from types import SimpleNamespace

    from rnnmeta.callbacks import RandomStateCheckpoint

    def callback(rank: int) -> RandomStateCheckpoint:
        cb = RandomStateCheckpoint()
        cb.setup(SimpleNamespace(global_rank=rank), None, "validate")
        return cb

    torch.manual_seed(123)
    saved = callback(0).state_dict()  # what rank 0 writes: only rank 0 writes checkpoints
    assert saved["rank"] == 0
    uninterrupted = torch.rand(4)  # rank 0's next draw in the run that never stopped

    rank0 = callback(0)
    torch.manual_seed(999)  # the resumed process is seeded afresh
    rank0.load_state_dict(saved)
    rank0.on_train_batch_start(SimpleNamespace(), None, None, 0)
    assert torch.equal(torch.rand(4), uninterrupted), "rank 0 must resume its random draws exactly"

    torch.manual_seed(999)
    seeded = torch.rand(4)  # what rank 1 draws from its seeded state
    rank1 = callback(1)
    torch.manual_seed(999)
    with pytest.warns(UserWarning, match="holds the random states of rank 0; rank 1 keeps its seeded states"):
        rank1.load_state_dict(saved)
    rank1.on_train_batch_start(SimpleNamespace(), None, None, 0)
    draw = torch.rand(4)
    assert torch.equal(draw, seeded) and not torch.equal(draw, uninterrupted)
