"""``rnnmeta compare``: several learners on the same tasks, test episodes and budget, and one table.

A comparison is one YAML file (see ``configs/compare/``)::

    name: sinusoid                 # results go to <output_dir>/<name>/, W&B group <name>
    seeds: [0, 1, 2]
    max_steps: 2000                # the budget: steps (reproducible), or max_cpu_minutes / max_wall_minutes
    threads: 1                     # torch threads of every run (recorded in the table)
    numerics: auto                 # portable (kernels that do not follow the CPU) with a step budget; native with a CPU budget
    data:    {class_path: rnnmeta.data.EpisodicDataModule, init_args: {...}}   # shared by all runs
    learners:
      maml:
        model: {class_path: rnnmeta.learners.MAML, init_args: {...}}          # as `rnnmeta fit` takes it
        max_steps: 5000            # optional: this learner's own step count
      snail:
        model: {class_path: rnnmeta.learners.SNAIL, init_args: {...}}
        train_data: {meta_batch_size: 32, q_queries: 1}                        # optional: its training protocol

Every learner x seed is trained on the same training task stream (up to its own training-side
overrides) and tested on the same fixed episodes, logged to W&B under one group and to CSV. The
whole config is checked, and every learner built once, before the first run starts. Results:
``results.md``/``.csv`` (a function of the config: with a step budget, bitwise the same on any
run of the same software on CPU), ``costs.md``/``.csv`` (time and memory on this machine),
``curves.png``, ``final.png`` and, for regression, ``predictions.png``. Finished runs are skipped
when the command is run again; an interrupted run resumes from its last checkpoint; a run made
with another config is refused unless ``force`` is given.

From Python::

    from rnnmeta.compare import compare
    rows = compare(name="mine", data={...}, learners={"maml": {"model": {...}}}, max_steps=500)
    rows[0]["mean"], rows[0]["ci95"]     # one record per learner, as in results.csv
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional

from rnnmeta.compare.config import (
    ComparisonConfigError,
    LearnerRun,
    RunPlan,
    TrainingProtocol,
    build_run,
    check_name,
    config_diff,
    int_at_least,
    plan_runs,
    with_added_defaults,
)
from rnnmeta.compare.monitor import RunMonitor
from rnnmeta.compare.runner import (
    PLAN_FILE,
    ComparisonLockedError,
    RunResult,
    load_result,
    lock_folder,
    save_plan,
    save_result,
    train_and_save,
)
from rnnmeta.compare.workers import run_in_processes
from rnnmeta.numerics import environment_is_portable

__all__ = [
    "ComparisonConfigError",
    "ComparisonLockedError",
    "LearnerRun",
    "RunMonitor",
    "RunResult",
    "StaleRunError",
    "TrainingProtocol",
    "build_parser",
    "build_run",
    "compare",
    "main",
]


class StaleRunError(ComparisonConfigError):
    """A run folder holds a run made with another config than the one asked for now."""


def _adopt(plan: RunPlan, run_dir: Path, added: list[str]) -> None:
    """Record ``plan``'s fingerprint in a run made before the arguments ``added`` existed (they are at their defaults)."""
    save_plan(plan, run_dir)
    result = load_result(run_dir)
    if result is not None:
        result.config_fingerprint = plan.fingerprint
        save_result(result, run_dir)
    print(f"{plan.run_name}: kept, recorded before {', '.join(added)} existed (at their defaults, the same run)")


def _check_existing(plan: RunPlan, run_dir: Path, force: bool) -> None:
    """Keep a run folder made with ``plan``'s config; refuse (or with ``force`` delete) one made with another.

    A run recorded before some of the learner's or data's arguments existed is kept when those
    arguments are at their defaults (:func:`~rnnmeta.compare.config.with_added_defaults`): its
    recorded config and result then take ``plan``'s fingerprint.
    """
    if not run_dir.exists():
        return
    recorded_file = run_dir / PLAN_FILE
    changes: list[str] = []
    if recorded_file.exists():
        recorded = json.loads(recorded_file.read_text())
        if recorded.get("fingerprint") == plan.fingerprint:
            return
        resolved = json.loads(json.dumps(plan.resolved(), default=str))
        filled, added = with_added_defaults(recorded.get("config", {}), resolved)
        if filled == resolved:
            _adopt(plan, run_dir, added)
            return
        changes = config_diff(filled, resolved)
    elif not any(run_dir.iterdir()):
        return
    if force:
        shutil.rmtree(run_dir)
        return
    if not recorded_file.exists():
        raise StaleRunError(
            f"{run_dir} holds a run without a recorded config (an older rnnmeta?), so it cannot be matched to this "
            "comparison; run with force: true (--force true) to delete it and train again"
        )
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    raise StaleRunError(
        f"{run_dir} was made with another config ({shown or 'fingerprint differs'}); its result and checkpoints do "
        "not belong to this comparison. Run with force: true (--force true) to delete it and train again, or use "
        "another name or output_dir to keep it"
    )


def compare(
    name: str,
    data: dict,
    learners: dict[str, dict],
    seeds: list[int] = [0, 1, 2],  # noqa: B006
    max_steps: Optional[int] = None,
    max_cpu_minutes: Optional[float] = None,
    max_wall_minutes: Optional[float] = None,
    threads: int = 1,
    workers: int = 1,
    numerics: Literal["auto", "native", "portable"] = "auto",
    trainer: Optional[dict] = None,
    target: Optional[float] = None,
    reference: Optional[str] = None,
    plot_tasks: int = 4,
    output_dir: str = "results",
    wandb_project: str = "rnnmeta",
    force: bool = False,
) -> list[dict[str, Any]]:
    """Run every learner x seed on identical data and evaluation episodes; write tables and plots.

    Args:
        name: comparison name (a plain name): results go to ``<output_dir>/<name>/``, W&B group ``<name>``.
        data: the shared data module config (``class_path``/``init_args``).
        learners: learner name -> :class:`LearnerRun` as a mapping (``model`` and optional
            ``max_steps``, ``threads``, ``train_data``); a bare ``{class_path, init_args}`` is
            taken as ``{model: ...}``.
        seeds: one run per learner and seed (initialisation and training randomness); distinct, >= 0.
        max_steps: meta-training steps per run: the reproducible budget (a learner's own
            ``max_steps`` takes precedence).
        max_cpu_minutes: CPU-minutes of training per run (this process's CPU clock, training
            steps only): the same work on a busy machine, but not bitwise reproducible.
        max_wall_minutes: wall-clock minutes of training per run; depends on the machine's load.
        threads: torch intra-op threads of every run (a learner's own ``threads`` takes precedence).
        workers: runs trained at once, each in its own process (``workers * threads`` should not
            exceed the cores). The results do not depend on it.
        numerics: ``portable``: every run in a child process with MKL's COMPATIBLE branch, ATen's
            AVX2 kernels, oneDNN and NNPACK off, so that no library picks its kernels from the CPU
            (:mod:`rnnmeta.numerics`; slower: docs/PERFORMANCE.md; an Intel Xeon and an AMD EPYC still
            printed other values for the main job, so the bits are not yet the same on every CPU);
            ``native``: this CPU's fastest kernels (another CPU can give other values);
            ``auto``: portable when the budget is in steps alone, native with a CPU or wall budget.
        trainer: extra ``pytorch_lightning.Trainer`` arguments shared by every run (e.g.
            ``log_every_n_steps``, ``enable_progress_bar``, ``accelerator``).
        target: validation metric whose first crossing is reported (steps and CPU seconds to target).
        reference: the learner every other row is compared with, episode by episode on the same test
            episodes (the table's paired column: mean difference +- its 95% CI); default: the row
            with the best mean.
        plot_tasks: held-out regression tasks shown in ``predictions.png`` (0: none).
        output_dir: where ``<name>/`` is written.
        wandb_project: W&B project of the runs (offline when no account is configured).
        force: delete and rerun the runs made with another config (runs made with this one are kept).

    Returns:
        One record per learner, as in ``results.csv``: ``learner``, ``protocol``, ``metric``,
        ``mean``, ``ci95``, ``seed_std``, ``seeds``, ``steps``, ``steps_to_target``, ``parameters``,
        ``budget``, ``threads``, ``test_episodes``, ``test_fingerprint``, ``vs``, ``paired_diff``, ``paired_ci95`` ...

    Raises:
        ComparisonConfigError: a wrong key, type or value anywhere in the config (before any run).
        StaleRunError: a run folder made with another config, without ``force``.
        ComparisonLockedError: another process is writing the same comparison folder.
    """
    from rnnmeta.logging import ensure_wandb_mode, point_wandb_cache

    check_name("comparison name", name)
    int_at_least("workers", workers)
    int_at_least("plot_tasks", plot_tasks, 0)
    plans = plan_runs(data, learners, seeds, max_steps, max_cpu_minutes, max_wall_minutes, threads, trainer, target, numerics)
    if reference is not None and reference not in learners:
        raise ComparisonConfigError(
            f"reference must name one of the learners ({', '.join(map(repr, learners))}), got {reference!r}"
        )
    out = Path(output_dir) / name
    with lock_folder(out), _terminate_as_exit():
        for plan in plans:
            _check_existing(plan, out / "runs" / plan.run_name, force)
        ensure_wandb_mode()
        cache_before = os.environ.get("WANDB_CACHE_DIR")
        point_wandb_cache(out)  # W&B's service logs under <out>/wandb/logs/, not ~/.cache
        try:
            results = _run_all(name, plans, out, wandb_project, plot_tasks, workers)
        finally:  # a caller's process keeps its own setting
            if cache_before is None:
                os.environ.pop("WANDB_CACHE_DIR", None)
        return _report(name, results, out, target, reference)


@contextmanager
def _terminate_as_exit():
    """Turn SIGTERM into ``SystemExit`` for the block (main thread only), so a killed comparison stops its workers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_signal(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_all(name: str, plans: list[RunPlan], out: Path, wandb_project: str, plot_tasks: int, workers: int) -> list[RunResult]:
    """Load finished runs, train the others (``workers`` at a time, each in its own process); results in plan order."""
    from tqdm.auto import tqdm

    results: dict[int, RunResult] = {}
    pending = []
    for i, plan in enumerate(plans):
        result = load_result(out / "runs" / plan.run_name)
        if result is not None and result.config_fingerprint == plan.fingerprint:
            results[i] = result
        else:
            pending.append(i)
    bar = tqdm(total=len(plans), initial=len(results), desc=f"compare {name}", position=0, leave=True, unit="run")
    # portable numerics need a process started with their environment: this one, or a child per run
    in_children = any(plans[i].numerics == "portable" for i in pending) and not environment_is_portable()
    if not in_children and (workers == 1 or len(pending) <= 1):
        for i in pending:
            bar.set_postfix_str(plans[i].run_name)
            results[i] = train_and_save(name, plans[i], out / "runs" / plans[i].run_name, wandb_project, plot_tasks)
            bar.update()
    else:
        for i, result in run_in_processes(name, [plans[i] for i in pending], out / "runs", wandb_project, plot_tasks, workers):
            results[pending[i]] = result
            bar.set_postfix_str(f"{result.learner}-seed{result.seed} done")
            bar.update()
    bar.close()
    return [results[i] for i in range(len(plans))]


def _report(name: str, results: list[RunResult], out: Path, target: Optional[float], reference: Optional[str]) -> list[dict[str, Any]]:
    from rnnmeta.compare.report import plot_curves, plot_final, plot_predictions, summarise, write_tables

    rows, costs = summarise(results, reference)
    results_md, costs_md = write_tables(rows, costs, out, f"Comparison: {name}", target)
    plots = [plot_curves(results, rows[0]["metric"], out), plot_final(rows, out), plot_predictions(results, out)]
    print()
    print(results_md)
    print(costs_md)
    print(f"Results: {out / 'results.md'}, {out / 'results.csv'}; costs: {out / 'costs.md'}")
    print(f"Plots:   {', '.join(str(p) for p in plots if p is not None)}")
    if os.environ.get("WANDB_MODE") == "offline":
        print(f"W&B:     offline runs under {out / 'runs'}/*/wandb_logs/wandb/; upload with `wandb sync <run folder>`")
    return rows


def build_parser():
    """The ``rnnmeta compare`` argument parser: every argument of :func:`compare`, with ``data`` and ``learners`` typed."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from rnnmeta.data import EpisodicDataModule

    parser = ArgumentParser(
        prog="rnnmeta compare",
        description="Train several learners on the same tasks, test episodes and budget; print one table.",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="a comparison YAML, e.g. configs/compare/sinusoid.yaml")
    parser.add_function_arguments(compare, skip={"data", "learners"})
    parser.add_subclass_arguments(EpisodicDataModule, "data", required=True)
    parser.add_argument("--learners", type=dict[str, LearnerRun], required=True, help="learner name -> LearnerRun")
    return parser


def main(argv: Optional[list[str]] = None) -> None:
    """``rnnmeta compare --config configs/compare/<name>.yaml [--max_steps N] [--force true]``."""
    import sys

    # meta-RL (issue 15): a config with a top-level `family` is run by rnnmeta.rl.compare
    from rnnmeta.rl.compare import is_rl_comparison

    if is_rl_comparison(argv):
        from rnnmeta.rl.compare import main as rl_main

        return rl_main(argv)
    from rnnmeta.logging import quiet_console

    quiet_console()
    parser = build_parser()
    try:
        cfg = parser.parse_args(argv)
    except Exception as err:  # print the message, not a traceback; name the learner where one is at fault
        print(f"rnnmeta compare: {_named_learner_error(argv) or err}", file=sys.stderr)
        raise SystemExit(2) from None
    kwargs = cfg.as_dict()
    kwargs.pop("config", None)
    kwargs.pop("__path__", None)
    compare(**kwargs)  # errors after parsing are reported by the `rnnmeta` command (one line, or --debug)


def _named_learner_error(argv: Optional[list[str]]) -> Optional[str]:
    """Re-check the learners of ``--config FILE`` one by one, so the error names the learner at fault."""
    import yaml

    from rnnmeta.compare.config import validate_specs

    args = list(argv or [])
    try:
        cfg = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
        validate_specs(cfg.get("data"), cfg.get("learners"))
    except ComparisonConfigError as err:
        return str(err)
    except Exception:  # no --config FILE, or a file the parser's own message describes better
        pass
    return None
