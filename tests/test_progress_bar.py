"""The progress bar of ``rnnmeta fit``/``compare``: redrawn at most every ``min_interval`` seconds, and the config's own kept."""

from __future__ import annotations

import sys

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

from rnnmeta.callbacks import SteadyProgressBar
from tests.helpers import REPO

CONFIG = str(REPO / "configs/sinusoid/maml_k5.yaml")


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - batch).pow(2).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(12, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("min_interval, draws", [(0.0, 24), (3600.0, 3)])
def test_the_bar_is_drawn_at_most_every_min_interval_and_at_each_epoch_end(monkeypatch, min_interval, draws):
    calls = []
    original = TQDMProgressBar.on_train_batch_end

    def counted(self, trainer, pl_module, outputs, batch, batch_idx):
        calls.append(batch_idx)
        return original(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(TQDMProgressBar, "on_train_batch_end", counted)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_model_summary=False,
                         callbacks=[SteadyProgressBar(min_interval=min_interval)])
    trainer.fit(_Tiny())
    # 2 epochs of 12 batches: every batch, or the first one and the last of each epoch
    assert len(calls) == draws
    if draws == 3:
        assert calls == [0, 11, 11]


def test_bad_min_interval_is_refused():
    with pytest.raises(ValueError, match="min_interval.*-1"):
        SteadyProgressBar(min_interval=-1)


def _bars(args):
    from rnnmeta.cli import build_cli

    trainer = build_cli(["--config", CONFIG, "--trainer.logger", "false", *args], run=False).trainer
    return [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)]


def test_the_command_uses_the_steady_bar_unless_the_config_names_one_or_turns_it_off(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rnnmeta"])
    bars = _bars([])
    assert len(bars) == 1 and isinstance(bars[0], SteadyProgressBar)
    assert _bars(["--trainer.enable_progress_bar", "false"]) == []
    own = _bars(["--trainer.callbacks+=TQDMProgressBar", "--trainer.callbacks.refresh_rate=7"])
    assert len(own) == 1 and type(own[0]) is TQDMProgressBar and own[0].refresh_rate == 7


def test_batches_not_drawn_yet_are_drawn_when_the_epoch_ends_or_max_steps_stops_it():
    bar = SteadyProgressBar(min_interval=3600.0)
    trainer = pl.Trainer(max_steps=17, logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[bar])
    trainer.fit(_Tiny())  # epoch 2 stops after 5 of its 12 batches; only its first was drawn by then
    assert bar.train_progress_bar.n == 5
