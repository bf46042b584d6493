"""``rnnmeta compare``: run several learners on the same tasks, episodes and budget, and tabulate them.

A comparison is one YAML file (see ``configs/compare/``)::

    name: sinusoid                 # results go to <output_dir>/<name>/, W&B group <name>
    seeds: [0, 1]
    max_steps: 2000                # the budget, the same for every learner (and/or max_minutes)
    data:    {class_path: rnnmeta.data.EpisodicDataModule, init_args: {...}}   # shared by all runs
    learners:
      maml:  {class_path: rnnmeta.learners.MAML, init_args: {...}}             # as `rnnmeta fit` takes it
      snail: {class_path: rnnmeta.learners.SNAIL, init_args: {...}}

Every learner x seed is trained with the same data module configuration (so the same training
task stream and the same fixed validation and test episodes), logged to W&B under one group and
to CSV, then tested. The results land in ``results.md``, ``results.csv`` and PNG plots. Finished
runs are skipped when the command is run again; an interrupted run resumes from its last
checkpoint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

from rnnmeta.callbacks import RandomStateCheckpoint
from rnnmeta.checkpoint import CorruptCheckpointError, check_checkpoint_file
from rnnmeta.logging import ensure_wandb_mode

RESULT_FILE = "result.json"


# ---------------------------------------------------------------------------- callbacks
def resident_bytes() -> int:
    """Current resident memory of this process (``/proc/self/statm``; peak RSS where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class RunMonitor(Callback):
    """Records what a comparison reports: training time, validation curve, peak memory, test-episode fingerprint."""

    def __init__(self, sample_seconds: float = 0.2) -> None:
        self.sample_seconds = sample_seconds
        self.train_seconds = 0.0
        self.train_batches = 0
        self.train_episodes = 0
        self.curve: list[dict[str, float]] = []
        self.peak_rss_bytes = 0
        self._batch_start = 0.0
        self._fit_start = 0.0
        self._elapsed_before = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._test_hash = hashlib.sha256()
        self.test_episodes = 0

    # peak memory: sample the process RSS in a thread (CPU), or read the CUDA allocator's peak
    def _sample_rss(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_bytes = max(self.peak_rss_bytes, resident_bytes())
            self._stop.wait(self.sample_seconds)

    def start_memory_sampling(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample_rss, daemon=True)
            self._thread.start()

    def stop_memory_sampling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()
        self.start_memory_sampling()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_seconds += time.perf_counter() - self._batch_start
        self.train_batches += 1
        self.train_episodes += batch.batch_size

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        name = f"val/{pl_module.metric_name}"
        value = trainer.callback_metrics.get(name)
        if value is not None:
            self.curve.append(
                {
                    "step": float(trainer.global_step),
                    "wall_seconds": self._elapsed_before + time.perf_counter() - self._fit_start,
                    "train_seconds": self.train_seconds,
                    "value": float(value),
                }
            )

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx: int = 0) -> None:
        for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y):
            self._test_hash.update(t.detach().cpu().contiguous().numpy().tobytes())
        self.test_episodes += batch.batch_size

    @property
    def test_fingerprint(self) -> str:
        return self._test_hash.hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_seconds": self.train_seconds,
            "train_batches": self.train_batches,
            "train_episodes": self.train_episodes,
            "curve": self.curve,
            "peak_rss_bytes": self.peak_rss_bytes,
            "elapsed": self._elapsed_before + (time.perf_counter() - self._fit_start if self._fit_start else 0.0),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_seconds = state["train_seconds"]
        self.train_batches = state["train_batches"]
        self.train_episodes = state["train_episodes"]
        self.curve = list(state["curve"])
        self.peak_rss_bytes = state["peak_rss_bytes"]
        self._elapsed_before = state["elapsed"]


# ---------------------------------------------------------------------------- config
@dataclass
class RunResult:
    """One learner x seed: its test metric and cost."""

    learner: str
    seed: int
    metric: str
    value: float
    ci95: float
    episodes: int
    parameters: int
    train_seconds: float
    episodes_per_second: float
    peak_memory_mb: float
    seconds_to_target: Optional[float]
    test_fingerprint: str
    curve: list[dict[str, float]] = field(default_factory=list)


def _build(data: dict, model: dict):
    """Instantiate a data module and a learner from their ``class_path`` configs (as ``rnnmeta fit`` takes them)."""
    from jsonargparse import ArgumentParser

    from rnnmeta.data import EpisodicDataModule
    from rnnmeta.learners import MetaLearner

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MetaLearner, "model", required=True)
    parser.add_subclass_arguments(EpisodicDataModule, "data", required=True)
    cfg = parser.parse_object({"model": model, "data": data})
    objs = parser.instantiate_classes(cfg)
    return objs.data, objs.model


def _seconds_to_target(curve: list[dict[str, float]], target: Optional[float], higher_is_better: bool) -> Optional[float]:
    if target is None:
        return None
    for point in curve:
        if (point["value"] >= target) if higher_is_better else (point["value"] <= target):
            return point["train_seconds"]
    return None


def _run_one(
    comparison: str,
    learner_name: str,
    learner_cfg: dict,
    data_cfg: dict,
    seed: int,
    run_dir: Path,
    trainer_cfg: dict,
    max_steps: Optional[int],
    max_minutes: Optional[float],
    target: Optional[float],
    wandb_project: str,
    position: int,
) -> RunResult:
    pl.seed_everything(seed, workers=True)
    datamodule, learner = _build(data_cfg, learner_cfg)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    # the monitor's counters travel in the checkpoint (Lightning saves callback state_dicts)
    monitor = RunMonitor()
    resume = last.exists()
    if resume:
        try:
            check_checkpoint_file(last)
        except CorruptCheckpointError as err:  # e.g. the process was killed while writing it
            aside = last.with_name("last.ckpt.corrupt")
            last.replace(aside)
            rank_zero_warn(f"{learner_name} seed {seed}: {err}; moved it to {aside.name} and starting the run again")
            resume = False
    wandb_dir = run_dir / "wandb_logs"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    loggers = [
        WandbLogger(
            project=wandb_project,
            group=comparison,
            name=f"{learner_name}-seed{seed}",
            save_dir=str(wandb_dir),
            config={"comparison": comparison, "learner": learner_name, "seed": seed, "model": learner_cfg, "data": data_cfg},
        ),
        CSVLogger(save_dir=str(run_dir), name="csv", version=""),
    ]
    checkpoint = ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, save_top_k=0, every_n_train_steps=50)

    callbacks: list[Callback] = [monitor, RandomStateCheckpoint(), checkpoint]
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(process_position=position))
    kwargs = dict(
        accelerator="auto",
        devices=1,
        logger=loggers,
        callbacks=callbacks,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        max_epochs=-1,
        log_every_n_steps=10,
    )
    kwargs.update(trainer_cfg)
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    if max_minutes is not None:
        kwargs["max_time"] = {"seconds": int(round(max_minutes * 60))}
    trainer = pl.Trainer(**kwargs)
    try:
        trainer.fit(learner, datamodule=datamodule, ckpt_path=str(last) if resume else None)
        monitor.stop_memory_sampling()
        (test,) = trainer.test(learner, datamodule=datamodule, verbose=False)
    finally:
        monitor.stop_memory_sampling()
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                import wandb

                if wandb.run is not None:
                    wandb.finish()
    metric = learner.metric_name
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = monitor.peak_rss_bytes / 2**20
    return RunResult(
        learner=learner_name,
        seed=seed,
        metric=metric,
        value=float(test[f"test/{metric}"]),
        ci95=float(test.get(f"test/{metric}_ci95", float("nan"))),
        episodes=monitor.test_episodes,
        parameters=learner.num_parameters(),
        train_seconds=monitor.train_seconds,
        episodes_per_second=monitor.train_episodes / monitor.train_seconds if monitor.train_seconds else float("nan"),
        peak_memory_mb=peak_mb,
        seconds_to_target=_seconds_to_target(monitor.curve, target, higher_is_better=metric == "acc"),
        test_fingerprint=monitor.test_fingerprint,
        curve=monitor.curve,
    )


# ---------------------------------------------------------------------------- reporting
def _fmt(x: Optional[float], digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def summarise(results: list[RunResult]) -> list[dict[str, Any]]:
    """One row per learner: mean metric with CI (one seed) or mean +- std over seeds, and mean costs."""
    rows = []
    for name in dict.fromkeys(r.learner for r in results):
        rs = [r for r in results if r.learner == name]
        values = [r.value for r in rs]
        reached = [r.seconds_to_target for r in rs if r.seconds_to_target is not None]
        rows.append(
            {
                "learner": name,
                "metric": rs[0].metric,
                "seeds": len(rs),
                "mean": statistics.fmean(values),
                "ci95": statistics.fmean(r.ci95 for r in rs),
                "seed_std": statistics.stdev(values) if len(values) > 1 else float("nan"),
                "parameters": rs[0].parameters,
                "train_seconds": statistics.fmean(r.train_seconds for r in rs),
                "episodes_per_second": statistics.fmean(r.episodes_per_second for r in rs),
                "peak_memory_mb": max(r.peak_memory_mb for r in rs),
                "seconds_to_target": statistics.fmean(reached) if len(reached) == len(rs) else None,
                "test_episodes": rs[0].episodes,
            }
        )
    return rows


def write_tables(rows: list[dict[str, Any]], out: Path, title: str, target: Optional[float]) -> str:
    """Write ``results.csv`` and ``results.md``; return the markdown table."""
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metric = rows[0]["metric"]
    lines = [
        f"## {title}",
        "",
        f"Test {metric} over {rows[0]['test_episodes']} fixed episodes (mean +- 95% CI; with several seeds, "
        "+- std across seeds is given too).",
        "",
        f"| learner | test {metric} | +- 95% CI | seed std | seeds | parameters | train s | episodes/s | peak MB | s to "
        f"{metric} {'>=' if metric == 'acc' else '<='} {target if target is not None else '-'} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['learner']} | {_fmt(r['mean'])} | {_fmt(r['ci95'])} | {_fmt(r['seed_std'])} | {r['seeds']} | "
            f"{r['parameters']:,} | {_fmt(r['train_seconds'], 1)} | {_fmt(r['episodes_per_second'], 1)} | "
            f"{_fmt(r['peak_memory_mb'], 0)} | {_fmt(r['seconds_to_target'], 1)} |"
        )
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    return table


def plot(results: list[RunResult], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Validation curves against steps and wall-clock, and final metric with CI bars, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = rows[0]["metric"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        if not r.curve:
            continue
        label = f"{r.learner} (seed {r.seed})"
        axes[0].plot([p["step"] for p in r.curve], [p["value"] for p in r.curve], marker="o", ms=3, label=label)
        axes[1].plot([p["wall_seconds"] for p in r.curve], [p["value"] for p in r.curve], marker="o", ms=3, label=label)
    axes[0].set_xlabel("meta-iteration")
    axes[1].set_xlabel("wall-clock seconds")
    for ax in axes:
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
        if metric == "mse":
            ax.set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    curves = out / "curves.png"
    fig.savefig(curves, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 4))
    ax.bar([r["learner"] for r in rows], [r["mean"] for r in rows], yerr=[0 if math.isnan(r["ci95"]) else r["ci95"] for r in rows], capsize=6)
    ax.set_ylabel(f"test {metric} (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    final = out / "final.png"
    fig.savefig(final, dpi=120)
    plt.close(fig)
    return [curves, final]


# ---------------------------------------------------------------------------- entry point
def compare(
    name: str,
    data: dict,
    learners: dict[str, dict],
    seeds: list[int] = [0],  # noqa: B006
    max_steps: Optional[int] = None,
    max_minutes: Optional[float] = None,
    trainer: Optional[dict] = None,
    target: Optional[float] = None,
    output_dir: str = "results",
    wandb_project: str = "rnnmeta",
    force: bool = False,
) -> list[dict[str, Any]]:
    """Run every learner x seed on identical data and evaluation episodes; write tables and plots.

    Args:
        name: comparison name: results go to ``<output_dir>/<name>/`` and W&B group ``<name>``.
        data: the shared data module config (``class_path``/``init_args``).
        learners: learner name -> learner config (``class_path``/``init_args``, as ``rnnmeta fit`` takes it).
        seeds: one run per learner and seed (the seed sets initialisation and training randomness).
        max_steps: meta-iterations per run (the same budget for every learner).
        max_minutes: wall-clock minutes per run (the same budget for every learner).
        trainer: extra ``pl.Trainer`` arguments shared by every run (e.g. ``val_check_interval``).
        target: validation metric value whose first crossing time is reported ("time to target").
        output_dir: where ``<name>/`` is written.
        wandb_project: W&B project of the runs (offline when no account is configured).
        force: rerun finished runs instead of skipping them.

    Returns:
        One summary row per learner (also written to ``results.csv``).
    """
    if not learners:
        raise ValueError(f"comparison {name!r} lists no learners")
    if max_steps is None and max_minutes is None:
        raise ValueError(f"comparison {name!r} needs a budget: max_steps, max_minutes or both")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if max_minutes is not None and max_minutes <= 0:
        raise ValueError(f"max_minutes must be > 0, got {max_minutes}")
    for learner_name, cfg in learners.items():
        if not isinstance(cfg, dict) or "class_path" not in cfg:
            raise ValueError(f"learner {learner_name!r} must be a mapping with class_path (and init_args), got {cfg!r}")
    ensure_wandb_mode()
    from tqdm.auto import tqdm

    out = Path(output_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(ln, seed) for ln in learners for seed in seeds]
    results: list[RunResult] = []
    bar = tqdm(jobs, desc=f"compare {name}", position=0, leave=True, unit="run")
    for learner_name, seed in bar:
        bar.set_postfix_str(f"{learner_name} seed {seed}")
        run_dir = out / "runs" / f"{learner_name}-seed{seed}"
        result_file = run_dir / RESULT_FILE
        if force and run_dir.exists():
            shutil.rmtree(run_dir)
        if result_file.exists():
            results.append(RunResult(**json.loads(result_file.read_text())))
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        result = _run_one(
            name,
            learner_name,
            learners[learner_name],
            data,
            seed,
            run_dir,
            dict(trainer or {}),
            max_steps,
            max_minutes,
            target,
            wandb_project,
            position=1,
        )
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(result.__dict__, indent=1))
        os.replace(tmp, result_file)
        results.append(result)
    bar.close()
    rows = summarise(results)
    table = write_tables(rows, out, f"Comparison: {name}", target)
    pngs = plot(results, rows, out)
    print()
    print(table)
    print(f"Results: {out / 'results.md'}, {out / 'results.csv'}")
    print(f"Plots:   {', '.join(str(p) for p in pngs)}")
    if os.environ.get("WANDB_MODE") == "offline":
        print(f"W&B:     offline runs under {out / 'runs'}/*/wandb_logs/wandb/; upload with `wandb sync <run folder>`")
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    """``rnnmeta compare --config configs/compare/<name>.yaml [--max_steps N] [--force true]``."""
    from jsonargparse import CLI

    CLI(compare, args=argv, as_positional=False)
