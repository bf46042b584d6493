"""The ``rnnmeta`` command: LightningCLI over every learner and data module, plus ``rnnmeta compare``.

Examples::

    rnnmeta fit --config configs/omniglot/maml_5w1s.yaml
    rnnmeta fit --config configs/omniglot/maml_5w1s.yaml --trainer.max_steps 200 --model.init_args.inner_lr 0.2
    rnnmeta test --config configs/omniglot/maml_5w1s.yaml --ckpt_path <run>/checkpoints/last.ckpt
    rnnmeta fit --config configs/omniglot/maml_5w1s.yaml --print_config
    rnnmeta compare --config configs/compare/sinusoid.yaml

Learners and data modules are chosen by ``class_path`` (LightningCLI subclass mode); every
argument is typed, so ``--help`` lists them and wrong types fail before anything runs. What the
command adds to LightningCLI is described in README.md: a folder of its own for every run, with
its ``config.yaml`` ("Run folders"); the configured learner, never the checkpoint's
hyperparameters, checked against a ``--ckpt_path`` before Lightning loads it ("The checkpoint
must fit the config"); errors printed as one message with exit status 1, ``--debug`` or
``RNNMETA_DEBUG=1`` for the traceback ("When something is wrong").
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from rnnmeta.callbacks import NullProfiler, RandomStateCheckpoint, SteadyProgressBar
from rnnmeta.checkpoint import LIGHTNING_CKPT_ALIASES, check_checkpoint_file, identity_differences
from rnnmeta.compare.runner import ComparisonLockedError
from rnnmeta.data import EpisodicDataModule
from rnnmeta.learners import MetaLearner
from rnnmeta.logging import ensure_wandb_mode, point_wandb_cache, quiet_console
from rnnmeta.nets import backbone_spec
from rnnmeta.specs import link_data_to_model

#: Errors a person fixes by changing a value, a file or a setting: printed without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    OSError,
    FloatingPointError,
    MisconfigurationException,
    ComparisonLockedError,
)

#: Environment variable that, set to 1, makes the command show tracebacks (like ``--debug``).
DEBUG_ENV = "RNNMETA_DEBUG"
#: The run folder of a ``--trainer.logger false`` run, handed by rank 0 to the ranks it launches.
_RUN_DIR_ENV = "RNNMETA_RUN_DIR"
#: Where runs go when the config names no folder (the shipped configs log under ``runs/``).
DEFAULT_RUNS_DIR = "runs"


# ---------------------------------------------------------------------------------- run folders
def run_folder(trainer: Trainer, broadcast: bool = True) -> str:
    """The folder of this run: where Lightning puts its ``checkpoints/``, and where ``config.yaml`` goes.

    ``<save_dir>/<name>/<version>`` of the first logger (the W&B run id, ``version_<n>``), as
    :class:`~pytorch_lightning.callbacks.ModelCheckpoint` resolves it, or ``default_root_dir``
    without a logger. ``broadcast`` takes rank 0's answer (call it on every rank then).
    """
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        path = os.path.join(save_dir, str(logger.name), version)
    else:
        path = str(trainer.default_root_dir)
    return trainer.strategy.broadcast(path) if broadcast else path


def _fresh_run_dir(learner: str, subcommand: Optional[str]) -> str:
    """``runs/<learner>/<subcommand>_<time>_<pid>``: a folder no other run uses (not created here).

    Ranks launched by this process (DDP) inherit it through an environment variable, so they
    agree with rank 0.
    """
    inherited = os.environ.get(_RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return inherited
    stamp = time.strftime("%Y%m%d_%H%M%S")
    path = os.path.join(DEFAULT_RUNS_DIR, learner, f"{subcommand or 'run'}_{stamp}_{os.getpid()}")
    os.environ[_RUN_DIR_ENV] = path
    return path


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` into the run's own folder and log the full config to the run's logger.

    The folder is :func:`run_folder` (beside ``checkpoints/``), not Lightning's ``trainer.log_dir``,
    which for W&B is the shared ``save_dir`` (every run overwrote ``runs/config.yaml``) and without
    a logger the current folder.
    """

    #: The run folder, known after ``setup`` on every rank.
    run_dir: Optional[str] = None

    def setup(self, trainer: Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        self.run_dir = run_folder(trainer)
        if trainer.is_global_zero:
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
            config_path = os.path.join(self.run_dir, self.config_filename)
            with warnings.catch_warnings():  # jsonargparse deprecates skip_none, which Lightning itself still passes
                warnings.simplefilter("ignore", DeprecationWarning)
                self.parser.save(self.config, config_path, skip_none=False, overwrite=True, multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(trainer.logger, Logger):
            config = self.parser.dump(self.config, skip_none=False, format="yaml")
            trainer.logger.log_hyperparams({"config": yaml.safe_load(config)})


# ---------------------------------------------------------------------------------- checkpoints
def read_checkpoint_header(path: str | os.PathLike) -> dict[str, Any]:
    """The parts of a checkpoint that say what it holds, read without unpickling code or loading tensors.

    Returns ``{"identity": the "rnnmeta" dict or None, "hyper_parameters": dict, "shapes": {name:
    shape}}`` (``torch.load(weights_only=True, mmap=True)``: the tensors stay on disk).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = ckpt.get("state_dict") or {}
    return {
        "identity": ckpt.get("rnnmeta"),
        "hyper_parameters": dict(ckpt.get("hyper_parameters") or {}),
        "shapes": {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)},
    }


def check_checkpoint_matches(model: MetaLearner, header: dict[str, Any], path: str | os.PathLike) -> None:
    """Refuse a checkpoint made for another learner, task kind, ``n_way``, ``target_dim`` or architecture.

    Raises:
        ValueError: names the checkpoint's learner and settings and the configured ones (and, for an
            architecture mismatch, the tensors and the hyperparameters that differ).
    """
    saved = header.get("identity")
    mine = model.checkpoint_identity()
    advice = "use the config the checkpoint was trained with (config.yaml in its run folder), or another checkpoint"
    if saved is not None:
        differing = identity_differences(saved, mine)
        if differing:
            said = ", ".join(f"{k}={saved.get(k)!r}" for k in differing if k != "learner")
            want = ", ".join(f"{k}={mine.get(k)!r}" for k in differing if k != "learner")
            raise ValueError(
                f"checkpoint {path} was saved from {saved.get('learner')}{f' ({said})' if said else ''}, but the "
                f"config builds {mine['learner']}{f' ({want})' if want else ''}; {advice}"
            )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = header.get("shapes") or {}
    if not shapes:
        return
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    missing = [k for k in expected if k not in shapes]
    extra = [k for k in shapes if k not in expected]
    if not (wrong or missing or extra):
        return
    parts = [f"{k} {list(shapes[k])} in the checkpoint, {list(expected[k])} configured" for k in wrong[:3]]
    if missing:
        parts.append(f"missing from the checkpoint: {missing[:3]}")
    if extra:
        parts.append(f"not in the configured learner: {extra[:3]}")
    hparams = {k: v for k, v in header.get("hyper_parameters", {}).items() if not k.startswith("_")}
    configured = {k: backbone_spec(v) if isinstance(v, torch.nn.Module) else v for k, v in model.hparams.items()}
    changed = [f"{k}={hparams[k]!r} (configured {configured[k]!r})" for k in hparams if k in configured and hparams[k] != configured[k]]
    hint = f"; it was trained with {', '.join(changed[:5])}" if changed else ""
    raise ValueError(
        f"checkpoint {path} does not fit the configured {type(model).__name__}: {'; '.join(parts)}{hint}; {advice}"
    )


# ---------------------------------------------------------------------------------- the CLI
class RnnmetaCLI(LightningCLI):
    """LightningCLI with rnnmeta's defaults: W&B offline without an account, a folder per run, checked checkpoints."""

    _ckpt_header: Optional[dict[str, Any]] = None
    _ckpt_path: Optional[str] = None
    _cli_args: Any = None

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """``seed_everything``, ``threads`` (torch intra-op threads) and ``numerics``, chosen in the config."""
        super().add_default_arguments_to_parser(parser)
        parser.add_argument(
            "--numerics",
            type=Literal["native", "portable"],
            default="native",
            help="native: this CPU's fastest kernels; portable: kernels that do not follow the CPU (MKL's COMPATIBLE "
            "branch, ATen's AVX2 kernels, oneDNN and NNPACK off; the command restarts itself with them); an Intel and an "
            "AMD CPU still gave other values (docs/PERFORMANCE.md). See rnnmeta.numerics.",
        )
        parser.add_argument(
            "--threads",
            type=Optional[int],
            default=None,
            help="torch intra-op threads of this run (torch.set_num_threads), recorded in its config.yaml; "
            "null: torch's default (one per core). Small models (the sinusoid MLPs) run fastest on 1; see docs/PERFORMANCE.md.",
        )

    def before_instantiate_classes(self) -> None:
        """Set the run's numerics and thread count before anything is built; record the thread count in force."""
        self._use_numerics(self.config.get(f"{self.subcommand}.numerics" if self.subcommand else "numerics", "native"))
        key = f"{self.subcommand}.threads" if self.subcommand else "threads"
        threads = self.config.get(key)
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads must be an integer >= 1 (or null for torch's default), got {threads!r}")
            torch.set_num_threads(threads)
        self.config[key] = torch.get_num_threads()

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands less ``predict``: ``rnnmeta predict`` is the few-shot job (:mod:`rnnmeta.predict`)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Set the learner's task kind and ``n_way`` from the data module: written once, in ``data``."""
        if self.datamodule_class is None or not issubclass(self.model_class, MetaLearner):
            return  # a meta-RL agent owns its tasks; the online protocol's module has no kind or n_way
        link_data_to_model(parser, "data", "model.init_args")

    def _use_numerics(self, numerics: str) -> None:
        """Portable numerics for the rest of this process; first restart it with their environment if needed."""
        from rnnmeta.numerics import (
            PORTABLE_ENVIRONMENT_TEXT,
            describe,
            environment_is_portable,
            portable_unsupported_reason,
            restart_portable,
            use,
        )

        if numerics != "portable":
            return
        if portable_unsupported_reason():
            raise ValueError(f"numerics: portable cannot run here: {portable_unsupported_reason()}; use native")
        if not environment_is_portable():
            if self._cli_args is not None and not isinstance(self._cli_args, list):
                raise ValueError(f"numerics: portable needs a command line to restart with; start Python with "
                                 f"{PORTABLE_ENVIRONMENT_TEXT} to use it with arguments given as a dict")
            restart_portable(sys.argv[1:] if self._cli_args is None else [str(a) for a in self._cli_args])
        self._numerics_scope = contextlib.ExitStack()  # held by the CLI: for the rest of the command
        self._numerics_scope.enter_context(use(numerics))
        rank_zero_info(f"numerics: portable ({describe()})")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then refuse a missing, truncated or corrupt ``--ckpt_path`` before anything unpickles it."""
        self._cli_args = args  # what a restart with portable numerics runs again
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and str(ckpt_path) not in LIGHTNING_CKPT_ALIASES and "://" not in str(ckpt_path):
            check_checkpoint_file(ckpt_path)

    def _parse_ckpt_path(self) -> None:
        """Read what the checkpoint holds; do **not** merge its hyperparameters into the config.

        LightningCLI would rebuild the model from the checkpoint's hyperparameters, silently
        replacing the configured learner (a MAML checkpoint tested as MAML under an LSTM config).
        The config decides what is built; :meth:`after_instantiate_classes` then checks that the
        checkpoint fits it.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path and Path(str(ckpt_path)).is_file():
            self._ckpt_path = str(ckpt_path)
            self._ckpt_header = read_checkpoint_header(ckpt_path)

    def after_instantiate_classes(self) -> None:
        """Compare the checkpoint with the configured learner before Lightning loads it."""
        super().after_instantiate_classes()
        if self._ckpt_header is not None and isinstance(self.model, MetaLearner):
            check_checkpoint_matches(self.model, self._ckpt_header, self._ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The configured trainer with a run folder of its own, plus :class:`~rnnmeta.callbacks.RandomStateCheckpoint`,
        unless the config names a progress bar or turns it off, :class:`~rnnmeta.callbacks.SteadyProgressBar`, and
        unless it names a profiler, :class:`~rnnmeta.callbacks.NullProfiler`."""
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = list(kwargs.get("callbacks", trainer_config.get("callbacks")) or [])
        if trainer_config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            kwargs["callbacks"] = [*callbacks, SteadyProgressBar()]
        if trainer_config.get("profiler") is None and kwargs.get("profiler") is None:
            kwargs["profiler"] = NullProfiler()
        if trainer_config.get("default_root_dir") is None and "default_root_dir" not in kwargs:
            if trainer_config.get("logger") is False:
                # without a logger Lightning writes checkpoints/ and config.yaml into default_root_dir,
                # the current folder unless set: give the run a folder of its own instead
                kwargs["default_root_dir"] = _fresh_run_dir(type(self.model).__name__, self.subcommand)
            else:
                kwargs["default_root_dir"] = DEFAULT_RUNS_DIR
        trainer = super().instantiate_trainer(**kwargs)
        if not trainer.loggers and any(isinstance(cb, LearningRateMonitor) for cb in trainer.callbacks):
            # the shipped configs monitor the learning rate, which Lightning refuses without a logger
            trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)]
            rank_zero_info("--trainer.logger false: the config's LearningRateMonitor is left out (it needs a logger)")
        if not any(isinstance(cb, RandomStateCheckpoint) for cb in trainer.callbacks):
            trainer.callbacks.insert(0, RandomStateCheckpoint())
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.save_dir:
                point_wandb_cache(logger.save_dir)
        return trainer

    def _print_summary(self) -> None:
        """Print where the run, its config, its checkpoints and its W&B run are (rank 0)."""
        if self.trainer.is_global_zero:
            print(run_summary(self.trainer, self.subcommand, self._ckpt_path), flush=True)

    after_fit = after_validate = after_test = _print_summary


def run_summary(trainer: Trainer, subcommand: str, ckpt_path: Optional[str] = None) -> str:
    """The lines printed at the end of ``rnnmeta fit``/``test``: run folder, config, checkpoints, W&B run."""
    config_cb = next((cb for cb in trainer.callbacks if isinstance(cb, LoggerSaveConfigCallback)), None)
    run_dir = config_cb.run_dir if config_cb is not None and config_cb.run_dir else run_folder(trainer, broadcast=False)
    rows = [("run folder", run_dir)]
    config_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(config_path):
        rows.append(("config", config_path))
    if ckpt_path:
        rows.append(("resumed from" if subcommand == "fit" else "checkpoint", ckpt_path))
    if subcommand == "fit":
        for cb in trainer.checkpoint_callbacks:
            if not isinstance(cb, ModelCheckpoint):
                continue
            if cb.best_model_path:
                score = cb.best_model_score
                value = f" ({cb.monitor} = {float(score):.4g})" if cb.monitor and score is not None else ""
                rows.append(("best checkpoint", f"{cb.best_model_path}{value}"))
            if cb.last_model_path:
                rows.append(("last checkpoint", cb.last_model_path))
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            rows.append(("W&B run", _wandb_run_description(logger)))
    width = max(len(label) for label, _ in rows)
    return "\n".join([f"rnnmeta {subcommand}: done"] + [f"  {label:<{width}}  {value}" for label, value in rows])


def _wandb_run_description(logger: WandbLogger) -> str:
    run = getattr(logger, "_experiment", None)
    if run is None:
        return "not started"
    settings = getattr(run, "settings", None)
    mode = getattr(settings, "mode", None)
    if mode == "disabled":
        return "disabled (WANDB_MODE=disabled)"
    sync_dir = getattr(settings, "sync_dir", None)
    if mode == "offline" or getattr(run, "offline", False):
        return f"offline, {sync_dir} (upload with: wandb sync {sync_dir})"
    url = getattr(run, "url", None)
    return f"{run.path}{f' ({url})' if url else ''}, local files in {sync_dir}"


def build_cli(args: Optional[list[str]] = None, run: bool = True) -> RnnmetaCLI:
    """Construct the CLI (``run=False`` only parses and instantiates, for tests and notebooks)."""
    ensure_wandb_mode()
    quiet_console()
    # meta-RL (issue 15): a config whose model is a rnnmeta.rl agent gets MetaRLAgent and no data module
    from rnnmeta.rl.cli import cli_classes

    model_class, datamodule_class = cli_classes(args, MetaLearner, EpisodicDataModule)
    return RnnmetaCLI(
        model_class,
        datamodule_class,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


# ---------------------------------------------------------------------------------- entry point
def _take_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether tracebacks were asked for (``--debug`` or ``RNNMETA_DEBUG=1``)."""
    rest = [a for a in argv if a != "--debug"]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return rest, env or len(rest) != len(argv)


#: Messages jsonargparse puts around an error raised by a class it instantiates.
_PARSER_WRAPPERS = ("Does not validate against any of the Union subtypes", "Problem with given class_path")


def unwrap_parser_error(err: BaseException) -> BaseException:
    """The error a learner or data module raised, out of jsonargparse's wrapper (which lists every subtype tried)."""
    while err.__cause__ is not None and str(err).lstrip().startswith(_PARSER_WRAPPERS):
        err = err.__cause__
    return err


def report_error(err: BaseException, file: Any = None) -> None:
    """Print ``err`` for a person: its type and message, and how to see the traceback."""
    file = sys.stderr if file is None else file
    err = unwrap_parser_error(err)
    message = str(err).strip() or repr(err)
    print(f"rnnmeta: error: {type(err).__name__}: {message}", file=file)
    print(f"(run again with --debug, or {DEBUG_ENV}=1, to see the traceback)", file=file, flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of the ``rnnmeta`` console script.

    Errors of :data:`USER_ERRORS` end the command with their message and exit status 1; with
    ``--debug`` or ``RNNMETA_DEBUG=1`` they propagate with their traceback.
    """
    from_command_line = argv is None
    argv, debug = _take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    if debug:
        os.environ[DEBUG_ENV] = "1"  # processes launched for DDP re-run the command line without --debug
    if from_command_line:
        sys.argv[1:] = argv
    try:
        if argv and argv[0] == "compare":
            from rnnmeta.compare import main as compare_main

            compare_main(argv[1:])
            return
        if argv and argv[0] == "predict":  # the few-shot job on a user's files, not Lightning's predict loop
            from rnnmeta.predict import main as predict_main

            predict_main(argv[1:])
            return
        build_cli(None if from_command_line else argv)
    except USER_ERRORS as err:
        if debug:
            raise
        report_error(err)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
