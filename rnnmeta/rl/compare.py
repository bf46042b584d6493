"""``rnnmeta compare`` for meta-RL: agents and classical algorithms on the same fixed test tasks, one table.

A comparison config (``configs/compare/bandits_n10_k5.yaml``)::

    name: bandits_n10_k5          # results go to <output_dir>/<name>/, W&B group <name>
    family: {class_path: rnnmeta.rl.BernoulliBandits, init_args: {n_arms: 5}}
    n_episodes: 10                # episodes per trial
    test_trials: 1000             # the fixed test tasks (seeded by eval_seed), shared by every row
    eval_seed: 0
    seeds: [0]                    # one training run per agent and seed
    max_steps: 1000               # PPO updates per run (an agent's own max_steps takes precedence)
    threads: 1
    accelerator: auto             # Lightning's: cpu, gpu, auto (the device the agents train and act on)
    numerics: native              # or portable: kernels that do not follow the CPU (rnnmeta.numerics; slower)
    baselines: [random, greedy, epsilon_greedy, ucb1, thompson, gittins]   # fixed rows (rnnmeta.rl.classical)
    normalise_by: null            # or value_iteration: every mean divided by that row's (SNAIL's MDP table)
    reference: null               # or gittins: the row every other is compared with trial by trial (default: the best mean)
    paper: {gittins: 6.6, rl2: 6.7}   # optional: the paper's number beside each row
    learners:
      rl2: {model: {class_path: rnnmeta.rl.RL2, init_args: {...}}, max_steps: 2000}

``family``, ``n_episodes``, ``test_trials``, ``eval_seed`` and ``seed`` are set on every agent by
the comparison. Results (``<output_dir>/<name>/``): ``results.md``/``.csv`` (mean total reward per
trial with its 95% CI over the test trials, the paired difference to the reference row over the same
trials with its 95% CI (every row meets the same environment randomness), the standard deviation across seeds, the normalised
score, the paper's number, the test-task fingerprint; a function of the config with a step budget),
``costs.md``/``.csv`` (CPU and wall seconds of training, updates per CPU second, the CPU),
``curves.png`` (validation return against updates, the baselines as horizontal lines), and per
run ``runs/<learner>-seed<k>/`` (checkpoints, ``metrics.csv``, the W&B offline run, ``result.json``).
A finished run whose config is unchanged is loaded, not retrained.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import yaml

RESULT_FILE = "result.json"


class RLComparisonError(ValueError):
    """A meta-RL comparison config with a wrong key, type or value (raised before any run)."""


def is_rl_comparison(argv: Optional[list[str]]) -> bool:
    """Whether ``--config FILE`` among ``argv`` is a meta-RL comparison (it has a top-level ``family``)."""
    args = list(argv or [])
    for i, arg in enumerate(args):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else (args[i + 1] if arg == "--config" and i + 1 < len(args) else None)
        if path:
            try:
                cfg = yaml.safe_load(Path(path).read_text())
            except (OSError, yaml.YAMLError):
                return False
            return isinstance(cfg, dict) and "family" in cfg
    return False


KEYS = {"name", "family", "n_episodes", "test_trials", "val_trials", "eval_seed", "seeds", "max_steps", "threads",
        "baselines", "normalise_by", "reference", "paper", "learners", "output_dir", "wandb_project", "val_check_interval", "force",
        "accelerator", "numerics"}


def _instantiate(spec: dict, what: str) -> Any:
    from jsonargparse import ArgumentParser

    from rnnmeta.rl.agent import MetaRLAgent
    from rnnmeta.rl.base import TaskFamily

    base = {"family": TaskFamily, "model": MetaRLAgent}[what]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, what, required=True)
    try:
        cfg = parser.parse_object({what: spec})
        return parser.instantiate_classes(cfg)[what]
    except Exception as err:  # jsonargparse wraps the learner's own error
        from rnnmeta.cli import unwrap_parser_error

        raise RLComparisonError(f"{what}: {unwrap_parser_error(err)}") from err


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def compare_rl(
    name: str,
    family: dict,
    n_episodes: int,
    learners: dict[str, dict],
    seeds: list[int] = [0],  # noqa: B006
    max_steps: int = 1000,
    test_trials: int = 1000,
    val_trials: int = 500,
    eval_seed: int = 0,
    threads: int = 1,
    baselines: list[str] = [],  # noqa: B006
    normalise_by: Optional[str] = None,
    reference: Optional[str] = None,
    paper: Optional[dict[str, float]] = None,
    val_check_interval: int = 100,
    output_dir: str = "results",
    wandb_project: str = "rnnmeta",
    force: bool = False,
    accelerator: str = "auto",
    numerics: str = "native",
) -> list[dict[str, Any]]:
    """Train every agent x seed, evaluate it and the classical algorithms on the same test tasks; write the tables.

    ``numerics``: ``native`` (this CPU's fastest kernels), or ``portable`` (kernels that do not
    follow the CPU: :mod:`rnnmeta.numerics`), which needs a process started with
    :data:`rnnmeta.numerics.PORTABLE_ENVIRONMENT`; ``rnnmeta compare`` restarts itself with it.

    Returns one record per row of ``results.csv`` (``learner``, ``kind``, ``mean``, ``ci95``, ...).

    Raises:
        RLComparisonError: a wrong key, type or value (before any run), or portable numerics in a
            process started without their environment.
    """
    import torch

    from rnnmeta.compare.config import check_name
    from rnnmeta.numerics import describe as describe_numerics
    from rnnmeta.compare.report import add_paired_columns, mean_over_seeds
    from rnnmeta.numerics import use as use_numerics
    from rnnmeta.rl.base import fingerprint
    from rnnmeta.rl.classical import BASELINES, make_baseline
    from rnnmeta.rl.trial import eval_tasks, evaluate

    check_name("comparison name", name)
    _check_portable(numerics)
    if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
        raise RLComparisonError(f"seeds must be a non-empty list of distinct integers, got {seeds!r}")
    for key, value in (("n_episodes", n_episodes), ("max_steps", max_steps), ("test_trials", test_trials),
                       ("val_trials", val_trials), ("threads", threads), ("val_check_interval", val_check_interval)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RLComparisonError(f"{key} must be an integer >= 1, got {key}={value!r}")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise RLComparisonError(f"unknown baselines {unknown}; expected some of {sorted(BASELINES)}")
    for key, value in (("normalise_by", normalise_by), ("reference", reference)):
        if value is not None and value not in list(baselines) + list(learners):
            raise RLComparisonError(f"{key}={value!r} names no row; expected one of {list(baselines) + list(learners)}")
    if not learners and not baselines:
        raise RLComparisonError("a comparison needs at least one learner or baseline")
    fam = _instantiate(family, "family")
    specs: dict[str, tuple[dict, int]] = {}
    for lname, entry in learners.items():
        check_name("learner name", lname)
        entry = dict(entry)
        spec = dict(entry.pop("model", entry))
        steps = entry.pop("max_steps", max_steps)
        init = dict(spec.get("init_args") or {})
        init.update({"family": family, "n_episodes": n_episodes, "test_trials": test_trials, "val_trials": val_trials,
                     "eval_seed": eval_seed})
        spec["init_args"] = init
        _instantiate(spec, "model")  # every agent is built once before the first run: a bad key fails now
        specs[lname] = (spec, steps)

    torch.set_num_threads(threads)
    out = Path(output_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    tasks = eval_tasks(fam, test_trials, eval_seed)
    test_print = fingerprint(tasks)
    rows: list[dict[str, Any]] = []
    per_trial: dict[str, Optional[torch.Tensor]] = {}  # each row's total reward per test trial, the paired columns
    curves: dict[str, list[tuple[int, float]]] = {}
    costs: list[dict[str, Any]] = []
    with use_numerics(numerics):  # every evaluation and training run, and what costs.md reports as in force
        in_force = describe_numerics()
        for bname in baselines:
            start = time.process_time()
            ev = evaluate(make_baseline(bname), fam, tasks, n_episodes, seed=eval_seed)
            per_trial[bname] = ev.per_trial
            rows.append({"learner": bname, "kind": "classical", "mean": ev.mean, "ci95": ev.ci95, "seed_std": float("nan"),
                         "reward_input_off": float("nan"), "seeds": 0, "steps": 0, "parameters": 0})
            costs.append({"learner": bname, "train_cpu_seconds": 0.0, "train_wall_seconds": 0.0,
                          "eval_cpu_seconds": time.process_time() - start})
        for lname, (spec, steps) in specs.items():
            results = []
            for seed in seeds:
                run_spec = json.loads(json.dumps(spec))
                run_spec["init_args"]["seed"] = seed
                results.append(_run(name, lname, seed, run_spec, steps, threads, val_check_interval,
                                    out / "runs" / f"{lname}-seed{seed}", wandb_project, force, accelerator, numerics))
            values = [r["mean"] for r in results]
            per_trial[lname] = mean_over_seeds([r.get("per_trial") for r in results])  # None in a result saved before it was kept
            blind = [r["reward_input_off"] for r in results if r.get("reward_input_off") is not None]
            rows.append({"learner": lname, "kind": spec["class_path"].rsplit(".", 1)[-1], "mean": statistics.fmean(values),
                         "ci95": statistics.fmean(r["ci95"] for r in results),
                         "reward_input_off": statistics.fmean(blind) if len(blind) == len(results) else float("nan"),
                         "seed_std": statistics.stdev(values) if len(values) > 1 else float("nan"), "seeds": len(results),
                         "steps": steps, "parameters": results[0]["parameters"]})
            curves[lname] = results[0]["curve"]
            costs.append({"learner": lname, "train_cpu_seconds": statistics.fmean(r["cpu_seconds"] for r in results),
                          "train_wall_seconds": statistics.fmean(r["wall_seconds"] for r in results),
                          "eval_cpu_seconds": statistics.fmean(r["eval_cpu_seconds"] for r in results)})
    add_paired_columns(rows, per_trial, reference, higher_is_better=True)
    norm = next((r["mean"] for r in rows if r["learner"] == normalise_by), None)
    for r in rows:
        r["normalised"] = r["mean"] / norm if norm else float("nan")
        r["paper"] = (paper or {}).get(r["learner"], float("nan"))
        r.update({"threads": threads, "test_trials": test_trials, "test_fingerprint": test_print, "numerics": numerics})
    from rnnmeta.compare.runner import cpu_name

    for c in costs:
        steps = next(r["steps"] for r in rows if r["learner"] == c["learner"])
        c["updates_per_cpu_second"] = steps / c["train_cpu_seconds"] if c["train_cpu_seconds"] else float("nan")
        c.update({"threads": threads, "cpu": cpu_name(), "load_average": os.getloadavg()[0], "numerics_in_force": in_force})
    title = (f"Comparison: {name} ({fam.describe()}, {n_episodes} episodes per trial, {test_trials} test trials "
             f"fingerprint {test_print}; mean total reward per trial +- 95% CI over trials)")
    _write(out, rows, costs, title, normalise_by)
    _plot(out, curves, rows, name)
    print((out / "results.md").read_text())
    print((out / "costs.md").read_text())
    print(f"Results: {out / 'results.md'}, {out / 'results.csv'}; costs: {out / 'costs.md'}; curves: {out / 'curves.png'}")
    return rows


def _check_portable(numerics: Any) -> None:
    """Refuse a ``numerics`` that is not ``native``/``portable``, or portable numerics this process cannot run."""
    from rnnmeta.numerics import PORTABLE_ENVIRONMENT_TEXT, check_numerics, environment_is_portable, portable_unsupported_reason

    try:
        check_numerics(numerics)
    except ValueError as err:
        raise RLComparisonError(str(err)) from None
    if numerics == "portable" and (portable_unsupported_reason() or not environment_is_portable()):
        raise RLComparisonError(
            f"numerics: portable cannot run in this process: "
            f"{portable_unsupported_reason() or f'it was not started with {PORTABLE_ENVIRONMENT_TEXT}'}; "
            "`rnnmeta compare --config ...` restarts itself with them, or start Python with them"
        )


def _run(comparison: str, learner: str, seed: int, spec: dict, steps: int, threads: int, val_every: int, run_dir: Path,
         wandb_project: str, force: bool, accelerator: str = "auto", numerics: str = "native") -> dict[str, Any]:
    """Train one agent (or load its finished result), test it; the record of ``result.json``."""
    import shutil
    import warnings

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    from rnnmeta.callbacks import NullProfiler, RandomStateCheckpoint
    from rnnmeta.logging import ensure_wandb_mode, point_wandb_cache

    config = {"spec": spec, "max_steps": steps, "threads": threads, "val_check_interval": val_every,
              # only when portable, so that the runs made before this option keep their fingerprints
              **({} if numerics == "native" else {"numerics": numerics})}
    fp = _fingerprint(config)
    result_file = run_dir / RESULT_FILE
    if result_file.exists() and not force:
        saved = json.loads(result_file.read_text())
        if saved.get("fingerprint") == fp:
            last = run_dir / "checkpoints" / "last.ckpt"
            if "reward_input_off" not in saved and last.exists():  # a run finished before the control existed
                import torch

                agent = _instantiate(spec, "model")
                agent.load_state_dict(torch.load(last, map_location="cpu", weights_only=False)["state_dict"])
                blind = _reward_input_off_evaluation(agent)
                saved.update({"reward_input_off": blind.mean if blind is not None else None,
                              "reward_input_off_ci95": blind.ci95 if blind is not None else None})
                result_file.write_text(json.dumps(saved, indent=1))
            return saved
        raise RLComparisonError(f"{run_dir} was made with another config; run with --force true to delete it and train again, "
                                "or use another name or output_dir")
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    pl.seed_everything(seed, verbose=False)
    agent = _instantiate(spec, "model")
    ensure_wandb_mode()
    point_wandb_cache(run_dir)
    loggers = [CSVLogger(str(run_dir), name="csv", version=""),
               WandbLogger(project=wandb_project, group=comparison, name=f"{learner}-seed{seed}", save_dir=str(run_dir / "wandb_logs"),
                           config={"comparison": comparison, **config, "fingerprint": fp})]
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(max_steps=steps, max_epochs=-1, logger=loggers, accelerator=accelerator, devices=1, val_check_interval=min(val_every, steps),
                             check_val_every_n_epoch=None, num_sanity_val_steps=0, enable_progress_bar=False,
                             enable_model_summary=False, log_every_n_steps=max(1, min(50, val_every)), profiler=NullProfiler(),
                             callbacks=[RandomStateCheckpoint(), ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, save_top_k=0)])
        cpu0, wall0 = time.process_time(), time.perf_counter()
        trainer.fit(agent, ckpt_path=str(last) if last.exists() else None)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        e0 = time.process_time()
        trainer.test(agent, verbose=False)
        eval_cpu = time.process_time() - e0
    for lg in loggers:
        lg.finalize("success")
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except ImportError:  # pragma: no cover
        pass
    ev = agent.last_evaluation
    blind = _reward_input_off_evaluation(agent)
    record = {"learner": learner, "seed": seed, "mean": ev.mean, "ci95": ev.ci95, "trials": ev.trials,
              "per_trial": ev.per_trial.tolist(), "steps": steps,
              "reward_input_off": blind.mean if blind is not None else None,
              "reward_input_off_ci95": blind.ci95 if blind is not None else None,
              "parameters": sum(p.numel() for p in agent.parameters()), "cpu_seconds": cpu, "wall_seconds": wall,
              "eval_cpu_seconds": eval_cpu, "curve": _read_curve(run_dir / "csv" / "metrics.csv"), "fingerprint": fp,
              "config": config}
    result_file.write_text(json.dumps(record, indent=1))
    return record


def load_run_agent(run_dir: Path | str, checkpoint: str = "last.ckpt") -> Any:
    """The trained agent of a comparison run folder (``<output_dir>/<name>/runs/<learner>-seed<k>/``), in eval mode.

    Built from the spec its ``result.json`` records (the family, trial length and evaluation tasks
    included), with the weights of ``checkpoints/<checkpoint>``.

    Raises:
        RLComparisonError: the folder holds no finished run or no such checkpoint.
    """
    import torch

    run_dir = Path(run_dir)
    result_file, weights = run_dir / RESULT_FILE, run_dir / "checkpoints" / checkpoint
    for path, what in ((result_file, "the record of a finished run"), (weights, "the trained weights")):
        if not path.is_file():
            raise RLComparisonError(f"{run_dir} has no {path.relative_to(run_dir)} ({what}); expected a run folder "
                                    "<output_dir>/<name>/runs/<learner>-seed<k> of `rnnmeta compare`")
    spec = json.loads(result_file.read_text())["config"]["spec"]
    agent = _instantiate(spec, "model")
    agent.load_state_dict(torch.load(weights, map_location="cpu", weights_only=False)["state_dict"])
    return agent.eval()


def _reward_input_off_evaluation(agent: Any) -> Optional[Any]:
    """A memory agent's test trials played again with its reward input at 0
    (:meth:`~rnnmeta.rl.agent.SequenceAgent.reward_input_off`), on the same tasks and randomness as its test: the
    control that shows how much of its return comes from reading rewards, i.e. from adapting. ``None`` for other agents."""
    import torch

    from rnnmeta.rl.agent import SequenceAgent
    from rnnmeta.rl.base import tasks_to
    from rnnmeta.rl.trial import eval_tasks, evaluate

    if not isinstance(agent, SequenceAgent):
        return None
    agent.eval()
    tasks = tasks_to(eval_tasks(agent.family, agent.test_trials, agent.eval_seed, "test"), agent.device)
    with agent.reward_input_off(), torch.no_grad():
        return evaluate(agent.actor(), agent.family, tasks, agent.n_episodes, seed=agent.eval_seed, batch_trials=agent.batch_eval)


def _read_curve(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    with path.open() as f:
        return [(int(row["step"]), float(row["val/return"])) for row in csv.DictReader(f) if row.get("val/return")]


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.4g}" if abs(x) >= 100 else f"{x:.3f}"
    return str(x)


def _write(out: Path, rows: list[dict], costs: list[dict], title: str, normalise_by: Optional[str]) -> None:
    from rnnmeta.compare.report import paired_cell

    for stem, table, cols in (
        ("results", rows, ["learner", "kind", "mean", "ci95", "vs", "paired_diff", "paired_ci95", "normalised", "paper",
                           "reward_input_off", "seed_std", "seeds", "steps", "parameters", "threads", "test_trials",
                           "test_fingerprint", "numerics"]),
        ("costs", costs, ["learner", "train_cpu_seconds", "train_wall_seconds", "updates_per_cpu_second", "eval_cpu_seconds",
                          "threads", "cpu", "load_average", "numerics_in_force"]),
    ):
        with (out / f"{stem}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(table)
        reference = rows[0].get("vs") if rows else None
        if stem == "results":
            cols = [c for c in cols if c not in ("vs", "paired_ci95") and (normalise_by is not None or c != "normalised")]
        header = [f"vs {reference} (paired)" if c == "paired_diff" else c for c in cols]
        lines = [f"{title}" if stem == "results" else "Training cost on this machine (wall time depends on its load)", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(paired_cell(r, 3) if c == "paired_diff" else _fmt(r.get(c)) for c in cols) + " |" for r in table]
        if stem == "results" and reference:
            lines += ["", f"vs {reference} (paired): the mean over the same test trials (the same tasks and environment randomness) "
                          f"of (this row's total reward minus {reference}'s), each agent's seeds averaged per trial, +- its 95% CI; "
                          "a CI that excludes 0 is a difference the choice of test trials does not explain"]
        if stem == "results" and normalise_by:
            lines += ["", f"normalised: mean total reward divided by that of {normalise_by}"]
        if stem == "results":
            lines += ["", "reward_input_off: a memory agent's mean total reward on the same test trials with its reward input at 0 "
                          "(the control of its adaptation; - for the other rows)"]
        (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def _plot(out: Path, curves: dict[str, list[tuple[int, float]]], rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for lname, curve in curves.items():
        if curve:
            ax.plot([s for s, _ in curve], [v for _, v in curve], marker="o", label=lname)
    for i, r in enumerate(x for x in rows if x["kind"] == "classical"):
        ax.axhline(r["mean"], ls="--", lw=1, color=f"C{(i + len(curves)) % 10}", label=f"{r['learner']} (test)")
    ax.set_xlabel("PPO updates")
    ax.set_ylabel("validation return per trial")
    ax.set_title(name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> None:
    """``rnnmeta compare --config configs/compare/<rl config>.yaml [--max_steps N] [--force true] [--seeds '[0,1]']``."""
    args = list(argv or [])
    cfg: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        key, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key:
            raise RLComparisonError(f"unexpected argument {arg!r}; expected --config FILE and --<key> VALUE overrides")
        if not value:
            if i + 1 >= len(args):
                raise RLComparisonError(f"{arg} needs a value")
            value, i = args[i + 1], i + 1
        if key == "config":
            loaded = yaml.safe_load(Path(value).read_text())
            if not isinstance(loaded, dict):
                raise RLComparisonError(f"{value} holds no mapping")
            cfg.update(loaded)
        else:
            cfg[key] = yaml.safe_load(value)
        i += 1
    unknown = sorted(set(cfg) - KEYS)
    if unknown:
        raise RLComparisonError(f"unknown keys {unknown} in the meta-RL comparison; expected some of {sorted(KEYS)}")
    missing = [k for k in ("name", "family", "n_episodes") if k not in cfg]
    if missing:
        raise RLComparisonError(f"the meta-RL comparison needs {missing}")
    if cfg.get("numerics") == "portable":
        from rnnmeta.numerics import environment_is_portable, portable_unsupported_reason, restart_portable

        if not environment_is_portable() and not portable_unsupported_reason():
            restart_portable(["compare", *args])  # MKL and ATen read the environment once, at start
    compare_rl(**{k: v for k, v in cfg.items() if k != "learners"}, learners=cfg.get("learners") or {})


__all__ = ["RLComparisonError", "compare_rl", "is_rl_comparison", "load_run_agent", "main"]
