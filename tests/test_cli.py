"""The `rnnmeta` command: fit from a shipped config, W&B offline run, checkpoint, test from it."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, omniglot_root_or_skip

CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def _rnnmeta(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "rnnmeta.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.parent.name != "compare"], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_parses_and_instantiates(config, tmp_path):
    from PIL import Image

    from rnnmeta.cli import build_cli

    extra = []
    if "ImageFolder" in config.read_text():  # point it at a generated folder of 10 classes x 3 images
        for c in range(10):
            (tmp_path / f"class{c}").mkdir()
            for i in range(3):
                Image.new("RGB", (90, 90), (25 * c, 10 * i, 0)).save(tmp_path / f"class{c}" / f"{i}.png")
        extra = [f"--data.init_args.dataset.init_args.root={tmp_path}"]
    cli = build_cli(["--config", str(config), "--trainer.logger", "false", *extra], run=False)
    assert cli.model.kind == cli.datamodule.kind
    if cli.model.kind == "classification":
        assert cli.model.n_way == cli.datamodule.n_way


def test_wrong_config_type_is_refused_with_the_key_named(tmp_path):
    cfg = yaml.safe_load((REPO / "configs/sinusoid/maml_k5.yaml").read_text())
    cfg["data"]["init_args"]["k_shot"] = "five"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = _rnnmeta(["fit", "--config", str(bad)], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "k_shot" in proc.stderr


def test_print_config_shows_the_learner():
    proc = _rnnmeta(["fit", "--config", str(REPO / "configs/sinusoid/maml_k5.yaml"), "--print_config"], cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["model"]["class_path"] == "rnnmeta.learners.MAML"
    assert printed["model"]["init_args"]["inner_lr"] == 0.01


@pytest.mark.slow
def test_fit_writes_wandb_offline_run_and_checkpoint_then_test_prints_accuracy(tmp_path):
    root = omniglot_root_or_skip()
    config = REPO / "configs/omniglot/maml_5w1s.yaml"
    common = [
        "--config", str(config),
        f"--data.init_args.dataset.init_args.root={root}",
        "--data.init_args.dataset.init_args.download=false",
        "--data.init_args.meta_batch_size=4",
        "--data.init_args.q_queries=3",
        "--data.init_args.val_episodes=8",
        "--data.init_args.test_episodes=20",
        "--data.init_args.eval_batch_size=10",
        "--data.init_args.train_batches_per_epoch=5",
        "--trainer.logger.init_args.save_dir=runs",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
    ]
    fit = _rnnmeta(["fit", *common, "--trainer.max_steps=5"], cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = glob.glob(str(tmp_path / "runs/wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, f"expected one offline W&B run, found {runs}"
    ckpts = glob.glob(str(tmp_path / "runs/**/checkpoints/last.ckpt"), recursive=True)
    assert len(ckpts) == 1, ckpts
    # the logged metrics are in the run's history records (the .wandb log stores their keys as text)
    data = Path(runs[0]).read_bytes()
    assert b"train/loss" in data and b"val/acc" in data
    test = _rnnmeta(["test", *common, f"--ckpt_path={ckpts[0]}"], cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    out = test.stdout + test.stderr
    assert "test/acc" in out and "test/acc_ci95" in out


@pytest.mark.parametrize("logger, pattern", [
    ("pytorch_lightning.loggers.CSVLogger", "runs/**/metrics.csv"),
    ("pytorch_lightning.loggers.TensorBoardLogger", "runs/**/events.out.tfevents.*"),
])
def test_csv_and_tensorboard_loggers_work_from_the_command_line(tmp_path, logger, pattern):
    fit = _rnnmeta([
        "fit", "--config", str(REPO / "configs/sinusoid/maml_k5.yaml"),
        "--trainer.logger", logger, "--trainer.logger.init_args.save_dir", "runs",
        "--trainer.max_steps=4", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--data.init_args.train_batches_per_epoch=2", "--data.init_args.val_episodes=10",
        "--data.init_args.meta_batch_size=4",
    ], cwd=tmp_path, timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    files = glob.glob(str(tmp_path / pattern), recursive=True)
    assert files, f"no {pattern} written"
    if logger.endswith("CSVLogger"):
        header = Path(files[0]).read_text().splitlines()[0]
        assert "train/loss" in header and "val/mse" in header
    assert glob.glob(str(tmp_path / "runs/**/checkpoints/last.ckpt"), recursive=True)
