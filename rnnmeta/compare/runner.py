"""Train and test one learner x seed of a comparison in its own run folder; resume it if it was cut off."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from rnnmeta.budget_schedule import BudgetCosineLR
from rnnmeta.callbacks import NullProfiler, RandomStateCheckpoint, SteadyProgressBar
from rnnmeta.checkpoint import CorruptCheckpointError, check_checkpoint_file
from rnnmeta.compare.config import RunPlan
from rnnmeta.compare.monitor import RunMonitor
from rnnmeta.numerics import describe as describe_numerics
from rnnmeta.numerics import use as use_numerics

__all__ = [
    "PLAN_FILE",
    "RESULT_FILE",
    "ComparisonLockedError",
    "RunResult",
    "cpu_name",
    "load_result",
    "lock_folder",
    "run_one",
    "save_plan",
    "save_result",
    "train_and_save",
]

RESULT_FILE = "result.json"
PLAN_FILE = "run_config.json"


class ComparisonLockedError(RuntimeError):
    """Another process is writing the same comparison folder."""


@dataclass
class RunResult:
    """One learner x seed: its test metric, what it cost, its validation curve (see :class:`RunMonitor`)."""

    learner: str
    seed: int
    class_path: str
    metric: str
    value: float
    ci95: float
    episodes: int
    parameters: int
    transductive: bool
    steps: int
    train_episodes: int
    budget: str
    threads: int
    steps_to_target: Optional[int]
    train_cpu_seconds: float
    train_wall_seconds: float
    cpu_seconds_to_target: Optional[float]
    peak_memory_mb: float
    test_fingerprint: str
    config_fingerprint: str
    cpu: str
    curve: list[dict[str, float]] = field(default_factory=list)
    predictions: Optional[dict[str, Any]] = None
    numerics: str = "native"
    numerics_in_force: str = ""
    #: the test metric of each test episode, in episode order (the paired columns of the table); None in older results
    episode_values: Optional[list[float]] = None


def cpu_name() -> str:
    """The CPU's model name and widest vector extension, e.g. ``"AMD EPYC 7B13 (AVX2)"``.

    The extension is the CPU's (``/proc/cpuinfo`` flags), not the kernels torch runs: portable
    numerics pin those to AVX2 on an AVX-512 machine (:mod:`rnnmeta.numerics`).
    """
    model, flags = None, None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model is None:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and flags is None:
                flags = set(line.split(":", 1)[1].split())
    name = model or platform.processor() or platform.machine()
    if flags is not None:
        widest = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        return f"{name} ({widest})"
    with contextlib.suppress(Exception):
        name += f" (torch: {torch.backends.cpu.get_cpu_capability()})"
    return name


@contextlib.contextmanager
def lock_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (``.lock`` inside it) for the block; refuse if another process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        yield
        return
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ComparisonLockedError(
                f"{folder} is being written by {holder}; wait for it to finish, or give this comparison another "
                "name or output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _steps_to_target(curve: list[dict[str, float]], target: Optional[float], higher_is_better: bool) -> Optional[dict[str, float]]:
    """The first validation point at or beyond ``target`` (None: no target, or never reached)."""
    if target is None:
        return None
    return next((p for p in curve if (p["value"] >= target if higher_is_better else p["value"] <= target)), None)


def regression_predictions(datamodule: Any, learner: Any, n_tasks: int, points: int = 100) -> Optional[dict[str, Any]]:
    """The learner's predictions on a grid for the first ``n_tasks`` test tasks (Finn et al. 2017, Fig. 2).

    Only for task sources that can report their task parameters (``sample_with_params``, e.g.
    :class:`~rnnmeta.data.Sinusoid`); ``None`` otherwise. Returns ``{"x": grid, "tasks": [{
    "support_x", "support_y", "amplitude", "phase", "pred"}]}`` as lists.
    """
    from rnnmeta.data.sampling import make_generator

    source = datamodule.source("test")
    if n_tasks < 1 or not hasattr(source, "sample_with_params") or learner.kind != "regression":
        return None
    lo, hi = source.x_range
    grid = torch.linspace(lo, hi, points).view(1, points, 1)
    tasks = []
    learner.eval()
    for index in range(min(n_tasks, datamodule.test_episodes)):
        generator = make_generator(datamodule.seed, "test", index)  # the same draw as test episode `index`
        episode, amplitude, phase = source.sample_with_params(generator, 1, datamodule.eval_k_shot, datamodule.eval_q_queries)
        with torch.no_grad():  # learners with an inner loop enable autograd for it themselves
            pred = learner(episode.support_x, episode.support_y, grid).detach()
        tasks.append(
            {
                "support_x": episode.support_x.flatten().tolist(),
                "support_y": episode.support_y.flatten().tolist(),
                "amplitude": float(amplitude[0]),
                "phase": float(phase[0]),
                "pred": pred.flatten().tolist(),
            }
        )
    return {"x": grid.flatten().tolist(), "tasks": tasks}


def _resume_checkpoint(last: Path, plan: RunPlan) -> Optional[Path]:
    if not last.exists():
        return None
    try:
        check_checkpoint_file(last)
    except CorruptCheckpointError as err:  # e.g. the process was killed while writing it
        aside = last.with_name("last.ckpt.corrupt")
        last.replace(aside)
        rank_zero_warn(f"{plan.learner} seed {plan.seed}: {err}; moved it to {aside.name} and starting the run again")
        return None
    return last


def run_one(
    comparison: str, plan: RunPlan, run_dir: Path, wandb_project: str, plot_tasks: int = 0, progress_bar: bool = True
) -> RunResult:
    """Train ``plan`` to its budget (resuming from ``run_dir/checkpoints/last.ckpt`` if present), test it, return its result.

    The run uses ``plan.threads`` torch threads and ``plan.numerics`` (both restored afterwards;
    portable numerics need a process started with their environment) and logs to W&B (group
    ``comparison``) and CSV (``run_dir/csv/metrics.csv``).
    """
    from rnnmeta.compare.config import build_run

    run_dir.mkdir(parents=True, exist_ok=True)
    save_plan(plan, run_dir)
    with contextlib.ExitStack() as restore:
        restore.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(plan.threads)
        restore.enter_context(use_numerics(plan.numerics))
        pl.seed_everything(plan.seed, workers=True, verbose=False)
        datamodule, learner = build_run(plan.model, plan.data)
        last = _resume_checkpoint(run_dir / "checkpoints" / "last.ckpt", plan)
        monitor = RunMonitor(plan.budget.max_cpu_seconds, plan.budget.max_wall_seconds)
        wandb_dir = run_dir / "wandb_logs"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        loggers = [
            WandbLogger(
                project=wandb_project,
                group=comparison,
                name=f"{comparison}-{plan.run_name}",
                save_dir=str(wandb_dir),
                config={"comparison": comparison, **plan.resolved(), "fingerprint": plan.fingerprint},
            ),
            CSVLogger(save_dir=str(run_dir), name="csv", version=""),
        ]
        checkpoint = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), save_last=True, save_top_k=0, every_n_train_steps=50)
        callbacks: list[Callback] = [monitor, RandomStateCheckpoint(), checkpoint]
        if plan.lr_decay_to is not None:
            callbacks.append(BudgetCosineLR(plan.lr_decay_to))
        defaults = {"accelerator": "auto", "devices": 1, "enable_model_summary": False, "num_sanity_val_steps": 0,
                    "profiler": NullProfiler()}
        trainer_kwargs: dict[str, Any] = {**defaults, "log_every_n_steps": 10, **plan.trainer}
        trainer_kwargs["enable_progress_bar"] = bool(trainer_kwargs.get("enable_progress_bar", True) and progress_bar)
        if trainer_kwargs["enable_progress_bar"]:
            callbacks.append(SteadyProgressBar(process_position=1))
        trainer = pl.Trainer(
            logger=loggers,
            callbacks=callbacks,
            max_epochs=-1,
            max_steps=plan.budget.max_steps if plan.budget.max_steps is not None else -1,
            **trainer_kwargs,
        )
        try:
            trainer.fit(learner, datamodule=datamodule, ckpt_path=str(last) if last else None)
            monitor.stop_memory_sampling()
            (test,) = trainer.test(learner, datamodule=datamodule, verbose=False)
            predictions = regression_predictions(datamodule, learner, plot_tasks)
        finally:
            monitor.stop_memory_sampling()
            import wandb

            if wandb.run is not None:
                wandb.finish()
        metric = learner.metric_name
        reached = _steps_to_target(monitor.curve, plan.target, higher_is_better=metric == "acc")
        peak_bytes = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else monitor.peak_rss_bytes
        cls = type(learner)
        return RunResult(
            learner=plan.learner,
            seed=plan.seed,
            class_path=f"{cls.__module__}.{cls.__qualname__}",
            metric=metric,
            value=float(test[f"test/{metric}"]),
            ci95=float(test.get(f"test/{metric}_ci95", float("nan"))),
            episodes=monitor.test_episodes,
            parameters=learner.num_parameters(),
            transductive=bool(learner.transductive),
            steps=int(trainer.global_step),
            train_episodes=monitor.train_episodes,
            budget=plan.budget.describe(),
            threads=plan.threads,
            steps_to_target=None if reached is None else int(reached["step"]),
            train_cpu_seconds=monitor.train_cpu_seconds,
            train_wall_seconds=monitor.train_wall_seconds,
            cpu_seconds_to_target=None if reached is None else reached["train_cpu_seconds"],
            peak_memory_mb=peak_bytes / 2**20,
            test_fingerprint=monitor.test_fingerprint,
            config_fingerprint=plan.fingerprint,
            cpu=cpu_name(),
            curve=monitor.curve,
            predictions=predictions,
            numerics=plan.numerics,
            numerics_in_force=describe_numerics(),
            episode_values=_episode_values(learner),
        )


def _episode_values(learner: Any) -> Optional[list[float]]:
    """The learner's test metric per test episode ``[n]`` from its last test, as floats (None if it kept none)."""
    values = learner.eval_episode_values.get("test")  # float64 [n], in episode order (MetaLearner._eval_end)
    return None if values is None else values.tolist()


def train_and_save(
    comparison: str, plan: RunPlan, run_dir: Path, wandb_project: str, plot_tasks: int, progress_bar: bool = True
) -> RunResult:
    """:func:`run_one`, then :func:`save_result`: what both the serial path and a worker process do."""
    result = run_one(comparison, plan, run_dir, wandb_project, plot_tasks, progress_bar=progress_bar)
    save_result(result, run_dir)
    return result


def save_plan(plan: RunPlan, run_dir: Path) -> None:
    """Write ``run_config.json``: the run's fingerprint and resolved config, what a rerun is matched against."""
    (run_dir / PLAN_FILE).write_text(json.dumps({"fingerprint": plan.fingerprint, "config": plan.resolved()}, indent=1, default=str))


def save_result(result: RunResult, run_dir: Path) -> None:
    """Write ``result.json`` atomically (a reader never sees half a file)."""
    target = run_dir / RESULT_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=1))
    os.replace(tmp, target)


def load_result(run_dir: Path) -> Optional[RunResult]:
    """The saved result of a finished run, or ``None`` if there is none (or it is from an older format)."""
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        return RunResult(**json.loads(path.read_text()))
    except (TypeError, ValueError):
        return None
