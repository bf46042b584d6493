"""The ``rnnmeta`` command: LightningCLI over every learner and data module, plus ``rnnmeta compare``.

Examples::

    rnnmeta fit --config configs/omniglot/maml_5w1s.yaml
    rnnmeta fit --config configs/omniglot/maml_5w1s.yaml --trainer.max_steps 200 --model.init_args.inner_lr 0.2
    rnnmeta test --config configs/omniglot/maml_5w1s.yaml --ckpt_path <run>/checkpoints/last.ckpt
    rnnmeta fit --config configs/omniglot/maml_5w1s.yaml --print_config
    rnnmeta compare --config configs/compare/sinusoid.yaml

Learners and data modules are chosen by ``class_path`` (LightningCLI subclass mode); every
argument is typed, so ``--help`` lists them and wrong types fail before anything runs.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import Logger

from rnnmeta.callbacks import RandomStateCheckpoint
from rnnmeta.checkpoint import LIGHTNING_CKPT_ALIASES, check_checkpoint_file
from rnnmeta.data import EpisodicDataModule
from rnnmeta.learners import MetaLearner
from rnnmeta.logging import ensure_wandb_mode


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` beside the run and log the full config to the run's logger (W&B, CSV, TensorBoard)."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if isinstance(trainer.logger, Logger):
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            import yaml

            trainer.logger.log_hyperparams({"config": yaml.safe_load(config)})


class RnnmetaCLI(LightningCLI):
    """LightningCLI with rnnmeta's defaults (W&B offline without an account, overwrite-safe config saving)."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then refuse a missing, truncated or corrupt ``--ckpt_path`` before Lightning unpickles it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and str(ckpt_path) not in LIGHTNING_CKPT_ALIASES and "://" not in str(ckpt_path):
            check_checkpoint_file(ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer, plus :class:`~rnnmeta.callbacks.RandomStateCheckpoint` unless it has one."""
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(cb, RandomStateCheckpoint) for cb in trainer.callbacks):
            trainer.callbacks.insert(0, RandomStateCheckpoint())
        return trainer


def build_cli(args: Optional[list[str]] = None, run: bool = True) -> RnnmetaCLI:
    """Construct the CLI (``run=False`` only parses and instantiates, for tests and notebooks)."""
    ensure_wandb_mode()
    return RnnmetaCLI(
        MetaLearner,
        EpisodicDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the ``rnnmeta`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from rnnmeta.compare import main as compare_main

        compare_main(argv[1:])
        return
    build_cli(argv)


if __name__ == "__main__":  # pragma: no cover
    main()
