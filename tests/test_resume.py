"""Exact resume through the `rnnmeta` command: kill a run after a checkpoint, resume it, get the same run.

A run of ``N`` steps is compared with one that is stopped after its checkpoint at step ``K`` and
resumed from it with ``--ckpt_path``: every weight tensor must be bitwise equal and the metrics
logged after the resume point identical. Two learners: MAML (no randomness of its own: the loops,
optimiser and task stream must resume) and a small learner that draws from every global random
generator during training (torch noise and dropout, numpy, Python ``random``), the case
:class:`~rnnmeta.callbacks.RandomStateCheckpoint` exists for. The shipped learners draw no random
numbers in their training steps (their randomness is the seeded episode stream), so this learner
is defined here. The kill is a real ``SIGKILL`` of a ``rnnmeta fit`` subprocess for the random
learner, and an exception raised inside the trainer for MAML.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal, Optional

from pytorch_lightning.cli import OptimizerCallable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn

from rnnmeta.callbacks import RandomStateCheckpoint, capture_random_state, restore_random_state
from rnnmeta.learners import MetaLearner

REPO = Path(__file__).resolve().parents[1]
N_STEPS = 12  # the whole run
KILL_AT = 6  # the step at which the interrupted run is killed (after its checkpoint at that step)
EVERY = 2  # checkpoint period (steps)
EPOCH = 4  # training batches per epoch: validation (and a checkpoint after it) at steps 4, 8, 12
# resume points: a checkpoint written at the end of a training batch right before a validation,
# the checkpoint written after that validation, and one in the middle of an epoch
RESUME_POINTS = {"before-validation": "step=4.ckpt", "after-validation": "val/val-step=4.ckpt", "mid-epoch": "step=6.ckpt"}


class NoisyLearner(MetaLearner):
    """A regression learner that uses all four global random generators while training.

    ``preds = head(dropout(relu(W [query_x + noise, mean(support_y)])))`` scaled by a factor
    drawn from numpy and shifted by one drawn from Python's ``random`` in training; validation
    adds (smaller) noise too, so it consumes random numbers between training steps.
    """

    def __init__(
        self,
        hidden: int = 16,
        dropout: float = 0.2,
        kind: Literal["classification", "regression"] = "regression",
        n_way: int = 5,
        target_dim: int = 1,
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__(kind=kind, n_way=n_way, target_dim=target_dim, optimizer=optimizer)
        self.save_hyperparameters()
        self.dropout = dropout
        self.inp = nn.Linear(1 + target_dim, hidden)
        self.out = nn.Linear(hidden, target_dim)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        self.check_inputs(support_x, support_y, query_x)
        # noise on the inputs in training, less of it in evaluation (validation draws random numbers too)
        x = query_x + (0.1 if self.training else 0.02) * torch.randn_like(query_x)
        context = support_y.mean(1, keepdim=True).expand(-1, x.shape[1], -1)
        h = F.dropout(torch.relu(self.inp(torch.cat([x, context], -1))), self.dropout, self.training)
        preds = self.out(h)
        if self.training:
            preds = preds * float(np.random.uniform(0.9, 1.1)) + 0.01 * random.random()
        return preds


class HangAt(Callback):
    """Write ``marker`` and wait to be killed at the start of step ``step`` (after that step's checkpoint)."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            Path(self.marker).write_text(str(trainer.global_step))
            time.sleep(600)


class Interrupted(Exception):
    pass


class RaiseAt(Callback):
    """Raise at the start of step ``step`` (the in-process stand-in for a crash after the checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Interrupted(f"stopped at step {self.step}")


def _class_path(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


NOISY_MODEL = {"class_path": _class_path(NoisyLearner), "init_args": {"hidden": 16, "dropout": 0.2, "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-2}}}}


def _write_config(folder: Path, name: str, model: Optional[dict] = None, extra_callbacks: tuple[dict, ...] = ()) -> Path:
    """A small sinusoid run from the shipped MAML config: CSV log, a checkpoint every EVERY steps, into ``folder``."""
    cfg = yaml.safe_load((REPO / "configs/sinusoid/maml_k5.yaml").read_text())
    cfg["seed_everything"] = 0
    if model is not None:
        cfg["model"] = model
    else:
        cfg["model"]["init_args"]["backbone"]["init_args"]["hidden"] = [16, 16]
        cfg["model"]["init_args"]["eval_inner_steps"] = 2
    cfg["trainer"].update(
        max_steps=N_STEPS,
        accelerator="cpu",
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        logger={"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(folder), "name": name, "version": ""}},
        callbacks=[
            {
                "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(folder / name / "ckpt"), "filename": "{step}", "every_n_train_steps": EVERY, "save_top_k": -1},
            },
            {  # written when validation ends
                "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(folder / name / "ckpt" / "val"), "filename": "val-{step}", "monitor": "val/mse", "save_top_k": -1},
            },
            *extra_callbacks,
        ],
    )
    cfg["data"]["init_args"].update(
        meta_batch_size=4, eval_batch_size=10, train_batches_per_epoch=EPOCH, val_episodes=20, test_episodes=20, seed=0
    )
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rnnmeta"])  # LightningCLI warns when sys.argv holds other arguments


def _fit(config: Path, ckpt_path: Optional[Path] = None):
    from rnnmeta.cli import build_cli

    args = ["fit", "--config", str(config)]
    if ckpt_path is not None:
        args.append(f"--ckpt_path={ckpt_path}")
    return build_cli(args)


def _csv_rows(folder: Path, name: str, from_step: int) -> list[dict[str, str]]:
    with open(folder / name / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) >= from_step]
    return sorted(rows, key=lambda r: (int(r["step"]), sorted(k for k, v in r.items() if v)))


def _assert_same_run(reference, resumed, folder: Path, ref_name: str, res_name: str, from_step: int) -> None:
    ref_state, res_state = reference.model.state_dict(), resumed.model.state_dict()
    assert ref_state.keys() == res_state.keys()
    differ = [k for k in ref_state if not torch.equal(ref_state[k], res_state[k])]
    assert not differ, f"weights differ after the resume: {differ}"
    assert resumed.trainer.global_step == reference.trainer.global_step == N_STEPS
    ref_metrics = {k: float(v) for k, v in reference.trainer.callback_metrics.items()}
    res_metrics = {k: float(v) for k, v in resumed.trainer.callback_metrics.items()}
    assert {"train/loss", "val/mse", "val/mse_ci95"} <= ref_metrics.keys()
    assert res_metrics == ref_metrics
    # every metric logged after the resume point, row by row (training losses and validations)
    ref_rows = [{k: v for k, v in r.items() if v} for r in _csv_rows(folder, ref_name, from_step)]
    res_rows = [{k: v for k, v in r.items() if v} for r in _csv_rows(folder, res_name, from_step)]
    assert res_rows == ref_rows
    assert sum("val/mse" in r for r in ref_rows) >= 2 and any("train/loss" in r for r in ref_rows)


def _kill_after_checkpoint(config: Path, marker: Path, timeout: float = 120.0) -> None:
    """Run ``rnnmeta fit`` in a subprocess and SIGKILL it once it waits after the step-KILL_AT checkpoint."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnmeta.cli", "fit", "--config", str(config)],
        cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"rnnmeta fit ended before the kill:\n{proc.stdout.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("rnnmeta fit did not reach the kill point in time")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_random_state_roundtrip_is_plain_data_and_exact():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.standard_normal()  # leave a cached Gaussian in numpy's state
    random.gauss(0, 1)
    state = capture_random_state()
    expected = (torch.rand(5), np.random.standard_normal(3), random.gauss(0, 1), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    restore_random_state(state)
    got = (torch.rand(5), np.random.standard_normal(3), random.gauss(0, 1), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2:] == expected[2:]
    with pytest.raises(ValueError, match=r"random state is missing \['numpy'\]"):
        restore_random_state({"torch": state["torch"], "python": state["python"]})


@pytest.mark.slow
def test_random_learner_resumes_exactly_after_sigkill(tmp_path):
    # the uninterrupted run
    reference = _fit(_write_config(tmp_path, "full", NOISY_MODEL))
    # the same run, killed (SIGKILL) while it waits at step KILL_AT, after that step's checkpoint
    marker = tmp_path / "killed.txt"
    hang = {"class_path": _class_path(HangAt), "init_args": {"step": KILL_AT, "marker": str(marker)}}
    _kill_after_checkpoint(_write_config(tmp_path, "killed", NOISY_MODEL, (hang,)), marker)
    ckpts = tmp_path / "killed" / "ckpt"
    assert not (ckpts / f"step={KILL_AT + EVERY}.ckpt").exists()

    for point, file in RESUME_POINTS.items():
        ckpt = ckpts / file
        assert ckpt.is_file(), point
        # the checkpoint holds the random states as plain data
        loaded = torch.load(ckpt, weights_only=True)
        saved = loaded["callbacks"]["RandomStateCheckpoint"]
        assert saved["rank"] == 0 and {"torch", "numpy", "python"} <= saved["random_state"].keys()
        # resumed to N_STEPS: the same weights and metrics as the run that was never stopped
        resumed = _fit(_write_config(tmp_path, f"resumed-{point}", NOISY_MODEL), ckpt_path=ckpt)
        _assert_same_run(reference, resumed, tmp_path, "full", f"resumed-{point}", loaded["global_step"])

    # the test can fail: the same resume without the saved random states ends elsewhere
    loaded = torch.load(ckpts / RESUME_POINTS["mid-epoch"], weights_only=True)
    del loaded["callbacks"]["RandomStateCheckpoint"]
    torch.save(loaded, tmp_path / "stripped.ckpt")
    blind = _fit(_write_config(tmp_path, "blind", NOISY_MODEL), ckpt_path=tmp_path / "stripped.ckpt")
    ref_state, blind_state = reference.model.state_dict(), blind.model.state_dict()
    assert all(not torch.equal(ref_state[k], blind_state[k]) for k in ref_state)


def test_maml_resumes_exactly_after_a_crash(tmp_path):
    reference = _fit(_write_config(tmp_path, "full"))
    crash = {"class_path": _class_path(RaiseAt), "init_args": {"step": KILL_AT}}
    with pytest.raises(Interrupted):
        _fit(_write_config(tmp_path, "crashed", extra_callbacks=(crash,)))
    for point in ("after-validation", "mid-epoch"):
        ckpt = tmp_path / "crashed" / "ckpt" / RESUME_POINTS[point]
        resumed = _fit(_write_config(tmp_path, f"resumed-{point}"), ckpt_path=ckpt)
        _assert_same_run(reference, resumed, tmp_path, "full", f"resumed-{point}", torch.load(ckpt, weights_only=True)["global_step"])


def test_the_command_adds_the_callback_once(tmp_path):
    from rnnmeta.cli import build_cli

    default = build_cli(["--config", str(_write_config(tmp_path, "default", NOISY_MODEL))], run=False)
    assert sum(isinstance(cb, RandomStateCheckpoint) for cb in default.trainer.callbacks) == 1
    # a user-given one (here from the config's callbacks) replaces the default instead of doubling it
    config = _write_config(tmp_path, "user", NOISY_MODEL, ({"class_path": "rnnmeta.callbacks.RandomStateCheckpoint"},))
    cli = build_cli(["fit", "--config", str(config), f"--trainer.max_steps={EVERY}"])
    assert sum(isinstance(cb, RandomStateCheckpoint) for cb in cli.trainer.callbacks) == 1
    saved = torch.load(tmp_path / "user" / "ckpt" / f"step={EVERY}.ckpt", weights_only=True)["callbacks"]
    assert saved["RandomStateCheckpoint"]["log_step"] == EVERY
    assert len(saved["RandomStateCheckpoint"]["random_state"]["python"]["internal"]) == 625
