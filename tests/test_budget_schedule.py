"""BudgetCosineLR: a cosine decay of the meta learning rate over a budget of steps, CPU or wall-clock seconds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from rnnmeta.budget_schedule import BASE_LR_KEY, BudgetCosineLR, budget_fraction
from rnnmeta.compare import ComparisonConfigError
from rnnmeta.compare.config import build_run, plan_runs
from rnnmeta.compare.monitor import RunMonitor
from test_compare import DATA, LEARNERS, QUIET, _run

MAML = LEARNERS["maml"]["model"]  # Adam, lr 1e-3


class _LearningRates(Callback):
    """The learning rate each optimiser step used."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])


def _fit(max_steps: int, *callbacks: Callback, model: dict = MAML) -> None:
    datamodule, learner = build_run(model, DATA)
    trainer = pl.Trainer(max_steps=max_steps, callbacks=list(callbacks), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(learner, datamodule=datamodule)


def test_factor_runs_from_one_to_the_final_fraction_along_a_cosine():
    schedule = BudgetCosineLR(final_factor=0.2)
    assert schedule.factor(0.0) == 1.0 and schedule.factor(1.0) == pytest.approx(0.2)
    assert schedule.factor(0.5) == pytest.approx(0.6) and schedule.factor(0.25) == pytest.approx(0.2 + 0.8 * (1 + math.sqrt(0.5)) / 2)
    assert schedule.factor(1.7) == schedule.factor(1.0)  # an overspent budget stays at the end
    for bad in (-0.1, 1.5, "0.1", True, float("nan")):
        with pytest.raises(ValueError, match=r"final_factor must be a number in \[0, 1\]"):
            BudgetCosineLR(bad)


def test_with_a_step_budget_it_is_torchs_cosine_annealing():
    rates = _LearningRates()
    _fit(8, BudgetCosineLR(final_factor=0.1), rates)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8, eta_min=1e-4)
    expected = []
    for _ in range(8):
        expected.append(cosine.get_last_lr()[0])
        optimizer.step()
        cosine.step()
    assert rates.rates == pytest.approx(expected, rel=1e-9) and rates.rates[0] == 1e-3
    assert all(a > b for a, b in zip(rates.rates, rates.rates[1:]))


def test_the_spent_fraction_is_the_furthest_budget_steps_cpu_or_wall():
    monitor = RunMonitor(max_cpu_seconds=10.0, max_wall_seconds=100.0)
    monitor.train_cpu_seconds, monitor.train_wall_seconds = 4.0, 20.0
    trainer = SimpleNamespace(max_steps=-1, global_step=3, callbacks=[monitor])
    assert budget_fraction(trainer) == pytest.approx(0.4)
    trainer.max_steps = 5
    assert budget_fraction(trainer) == pytest.approx(0.6)
    monitor.train_cpu_seconds = 25.0
    assert budget_fraction(trainer) == 1.0
    assert budget_fraction(SimpleNamespace(max_steps=-1, global_step=3, callbacks=[RunMonitor()])) is None


def test_it_refuses_a_run_without_budget_and_a_learner_with_its_own_schedule():
    with pytest.raises(ValueError, match="needs a budget to decay over"):
        _fit(-1, BudgetCosineLR())
    scheduled = {**MAML, "init_args": {**MAML["init_args"], "lr_scheduler": {
        "class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2}}}}
    with pytest.raises(ValueError, match="MAML also has an lr_scheduler: remove one"):
        _fit(4, BudgetCosineLR(), model=scheduled)


def test_a_comparison_decays_a_learners_rate_over_its_budget_and_checkpoints_the_configured_rate(tmp_path):
    (plan,) = plan_runs(DATA, {"maml": {**LEARNERS["maml"], "lr_decay_to": 0.0}}, [0], 8, None, None, 1, {}, None)
    (plain,) = plan_runs(DATA, {"maml": LEARNERS["maml"]}, [0], 8, None, None, 1, {}, None)
    assert plan.lr_decay_to == 0.0 and plain.lr_decay_to is None
    # the option enters the fingerprint only when set: the runs made before it keep theirs
    assert "lr_decay_to" not in plain.resolved() and plan.fingerprint != plain.fingerprint
    _run(tmp_path, learners={"maml": {**LEARNERS["maml"], "lr_decay_to": 0.0}})
    last = tmp_path / "results" / "tiny" / "runs" / "maml-seed0" / "checkpoints" / "last.ckpt"
    (group,) = torch.load(last, weights_only=False)["optimizer_states"][0]["param_groups"]
    assert group[BASE_LR_KEY] == 1e-3  # what a resumed run decays from
    assert group["lr"] == pytest.approx(1e-3 * (1 + math.cos(math.pi * 7 / 8)) / 2)  # the last of 8 steps


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"lr_decay_to": 1.5}, r"learners\.maml\.lr_decay_to must be a number in \[0, 1\].*got 1\.5"),
        ({"lr_decay_to": 0.1, "model": {**MAML, "init_args": {**MAML["init_args"], "lr_scheduler": {
            "class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2}}}}},
         r"learner 'maml' has both lr_decay_to and model\.init_args\.lr_scheduler"),
        ({"lr_decay_to": "fast"}, r"lr_decay_to"),
    ],
)
def test_bad_lr_decay_settings_are_refused_before_training(extra, message):
    with pytest.raises(ComparisonConfigError, match=message):
        plan_runs(DATA, {"maml": {**LEARNERS["maml"], **extra}}, [0], 8, None, None, 1, QUIET, None)


def test_rnnmeta_fit_takes_it_as_a_trainer_callback(tmp_path, monkeypatch):
    import sys

    from rnnmeta.cli import main
    from test_cli import SINUSOID_MAML, TINY

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    main(["fit", "--config", str(SINUSOID_MAML), "--trainer.logger=pytorch_lightning.loggers.CSVLogger",
          "--trainer.logger.init_args.save_dir=runs", *TINY, "--trainer.max_steps=4",
          "--trainer.callbacks+=rnnmeta.budget_schedule.BudgetCosineLR", "--trainer.callbacks.final_factor=0.5"])
    (last,) = tmp_path.rglob("last.ckpt")
    checkpoint = torch.load(last, weights_only=False)
    (group,) = checkpoint["optimizer_states"][0]["param_groups"]
    # the config's lr 1e-3; the checkpoint's last step started at (global_step - 1) / 4 of the budget
    started = (checkpoint["global_step"] - 1) / 4
    assert checkpoint["global_step"] >= 2 and group[BASE_LR_KEY] == 1e-3
    assert group["lr"] == pytest.approx(1e-3 * (0.5 + 0.5 * (1 + math.cos(math.pi * started)) / 2))
