"""A comparison's report: the results table (a function of the config), the costs table (of the machine), plots.

``results.csv`` / ``results.md`` hold only what the config decides: with a step budget they are
bitwise the same on every run of the same config on the same software, idle machine or busy.
``costs.csv`` / ``costs.md`` hold what the machine decides (CPU and wall seconds, memory).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any, Optional

import torch

from rnnmeta.compare.runner import RunResult
from rnnmeta.evaluation import paired_difference

__all__ = ["add_paired_columns", "mean_over_seeds", "paired_cell", "plot_curves", "plot_final", "plot_predictions", "summarise", "write_tables"]


def _mean_or_none(values: list[Optional[float]]) -> Optional[float]:
    return statistics.fmean(values) if values and all(v is not None for v in values) else None


def mean_over_seeds(series: list[Optional[list[float]]]) -> Optional[torch.Tensor]:
    """One learner's per-episode (or per-trial) values ``[n]``, averaged over its seeds' series; None if a seed kept
    none or the seeds' lengths differ."""
    if any(s is None for s in series) or len({len(s) for s in series}) != 1:  # type: ignore[arg-type]
        return None
    return torch.tensor(series, dtype=torch.float64).mean(0)


def add_paired_columns(
    rows: list[dict[str, Any]], series: dict[str, Optional[torch.Tensor]], reference: Optional[str], higher_is_better: bool
) -> None:
    """Fill ``vs``, ``paired_diff`` and ``paired_ci95`` of every row (keyed by ``row["learner"]``).

    ``series`` maps a row's name to its metric per test episode (or trial) ``[n]``, all on the same
    episodes, or None where the row kept none. ``vs`` is ``reference``, or else the row with the best
    mean among those with a series. ``paired_diff`` and ``paired_ci95`` are the mean of (row minus
    reference) over the episodes and its 95% CI (:func:`~rnnmeta.evaluation.paired_difference`); None
    for the reference itself and for rows without a series.

    Raises:
        ValueError: ``reference`` names no row.
    """
    by_name = {r["learner"]: r for r in rows}
    if reference is not None and reference not in by_name:
        raise ValueError(f"paired reference {reference!r} is not a row of this table; expected one of {', '.join(by_name)}")
    if reference is None:
        candidates = [r for r in rows if series.get(r["learner"]) is not None]
        sign = 1.0 if higher_is_better else -1.0
        reference = max(candidates, key=lambda r: sign * r["mean"])["learner"] if candidates else None
    base = None if reference is None else series.get(reference)
    for row in rows:
        values = series.get(row["learner"])
        diff = None
        if base is not None and values is not None and row["learner"] != reference and values.shape == base.shape:
            diff = paired_difference(values, base)
        row["vs"] = reference or ""
        row["paired_diff"] = None if diff is None else diff.mean
        row["paired_ci95"] = None if diff is None else diff.ci95


def paired_cell(row: dict[str, Any], digits: int = 4) -> str:
    """The table cell of :func:`add_paired_columns`' columns: ``+0.0123 +- 0.0045``, ``reference`` or ``-``."""
    if row["learner"] == row["vs"]:
        return "reference"
    if row["paired_diff"] is None:
        return "-"
    return f"{row['paired_diff']:+.{digits}f} +- {row['paired_ci95']:.{digits}f}"


def summarise(results: list[RunResult], reference: Optional[str] = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per learner: (results row, costs row).

    The results row gives the mean test metric over seeds, the mean 95% CI over test episodes, the
    standard deviation across seeds, the protocol and the budget, and the paired comparison with
    the ``reference`` learner (default: the row with the best mean): ``paired_diff``, the mean over
    the test episodes of this learner's metric minus the reference's on the same episode (each
    learner's seeds averaged per episode), and ``paired_ci95``, its 95% CI
    (:func:`~rnnmeta.evaluation.paired_difference`); None for the reference itself and for runs
    saved without per-episode values. The costs row gives the mean training time and the peak memory.
    """
    results_rows, cost_rows = [], []
    for name in dict.fromkeys(r.learner for r in results):
        rs = [r for r in results if r.learner == name]
        values = [r.value for r in rs]
        results_rows.append(
            {
                "learner": name,
                "class": rs[0].class_path.rsplit(".", 1)[-1],
                "protocol": "transductive" if rs[0].transductive else "per query",
                "metric": rs[0].metric,
                "mean": statistics.fmean(values),
                "ci95": statistics.fmean(r.ci95 for r in rs),
                "seed_std": statistics.stdev(values) if len(values) > 1 else float("nan"),
                "seeds": len(rs),
                "steps": statistics.fmean(r.steps for r in rs),
                "train_tasks": statistics.fmean(r.train_episodes for r in rs),
                "steps_to_target": _mean_or_none([r.steps_to_target for r in rs]),
                "parameters": rs[0].parameters,
                "budget": rs[0].budget,
                "threads": rs[0].threads,
                "test_episodes": rs[0].episodes,
                "test_fingerprint": rs[0].test_fingerprint,
                "numerics": rs[0].numerics,
            }
        )
        cpu = statistics.fmean(r.train_cpu_seconds for r in rs)
        cost_rows.append(
            {
                "learner": name,
                "train_cpu_seconds": cpu,
                "train_wall_seconds": statistics.fmean(r.train_wall_seconds for r in rs),
                "steps_per_cpu_second": statistics.fmean(r.steps for r in rs) / cpu if cpu else float("nan"),
                "cpu_seconds_to_target": _mean_or_none([r.cpu_seconds_to_target for r in rs]),
                "peak_memory_mb": max(r.peak_memory_mb for r in rs),
                "threads": rs[0].threads,
                "cpu": rs[0].cpu,
                "numerics_in_force": rs[0].numerics_in_force,
            }
        )
    series = {row["learner"]: mean_over_seeds([r.episode_values for r in results if r.learner == row["learner"]])
              for row in results_rows}
    add_paired_columns(results_rows, series, reference, higher_is_better=results_rows[0]["metric"] == "acc")
    return results_rows, cost_rows


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _markdown(heading: str, note: str, columns: list[str], rows: list[list[Any]]) -> str:
    """``## heading``, a paragraph and a table with one row per entry of ``rows`` (cells as ``str``)."""
    lines = [f"## {heading}", "", note, "", f"| {' | '.join(columns)} |", "|" + "---|" * len(columns)]
    lines += [f"| {' | '.join(str(cell) for cell in row)} |" for row in rows]
    return "\n".join(lines) + "\n"


def write_tables(
    results_rows: list[dict[str, Any]], cost_rows: list[dict[str, Any]], out: Path, title: str, target: Optional[float]
) -> tuple[str, str]:
    """Write ``results.csv``/``.md`` and ``costs.csv``/``.md``; return the two markdown tables."""
    _write_csv(results_rows, out / "results.csv")
    _write_csv(cost_rows, out / "costs.csv")
    metric = results_rows[0]["metric"]
    better = ">=" if metric == "acc" else "<="
    target_text = "-" if target is None else f"{target:g}"
    budgets = list(dict.fromkeys(r["budget"] for r in results_rows))
    if len(budgets) > 1 and all(b.endswith(" steps") for b in budgets):
        budget_text = "each learner's own number of meta-training steps (the steps column)"
    else:
        budget_text = "; ".join(budgets)
    modes = set(r["numerics"] for r in results_rows)
    numerics_text = (
        "portable (kernels that do not follow the CPU: MKL COMPATIBLE, ATen AVX2, oneDNN and NNPACK off; "
        "an Intel and an AMD CPU still gave other values, docs/PERFORMANCE.md)" if modes == {"portable"}
        else "native (this CPU's fastest kernels; another CPU can give other values)" if modes == {"native"}
        else "mixed (see results.csv)"
    )
    reference = results_rows[0].get("vs") or None
    paired_text = "" if reference is None else (
        f" vs {reference} (paired): the mean over the same test episodes of (this learner's {metric} minus {reference}'s), "
        "each learner's seeds averaged per episode, +- its 95% CI; a CI that excludes 0 is a difference the choice of "
        "test episodes does not explain (the spread over training seeds is the seed std)."
    )
    results_md = _markdown(
        title,
        f"Test {metric} over {results_rows[0]['test_episodes']:,} fixed episodes (the same for every learner: "
        f"fingerprint {results_rows[0]['test_fingerprint']}), mean over seeds +- the 95% CI over episodes; "
        f"seed std is the spread across seeds. Budget per run: {budget_text}. Numerics: {numerics_text}. Protocol: 'per query' "
        "answers each query from the support set alone, 'transductive' normalises over the query batch." + paired_text,
        ["learner", "protocol", f"test {metric}", "+- 95% CI", f"vs {reference or '-'} (paired)", "seed std", "seeds", "steps",
         f"steps to {metric} {better} {target_text}", "parameters", "threads"],
        [
            [r["learner"], r["protocol"], _fmt(r["mean"]), _fmt(r["ci95"]), paired_cell(r), _fmt(r["seed_std"]), r["seeds"],
             _fmt(r["steps"], 0), _fmt(r["steps_to_target"], 0), f"{r['parameters']:,}", r["threads"]]
            for r in results_rows
        ],
    )
    (out / "results.md").write_text(results_md)
    costs_md = _markdown(
        f"Costs on this machine: {cost_rows[0]['cpu']}",
        "Training steps only (validation excluded), mean over seeds; these vary with the machine and its load. "
        f"Numerics in force: {cost_rows[0]['numerics_in_force'] or 'not recorded'}.",
        ["learner", "train CPU s", "train wall s", "steps per CPU s", f"CPU s to {metric} {better} {target_text}", "peak MB"],
        [
            [c["learner"], _fmt(c["train_cpu_seconds"], 1), _fmt(c["train_wall_seconds"], 1),
             _fmt(c["steps_per_cpu_second"], 1), _fmt(c["cpu_seconds_to_target"], 1), _fmt(c["peak_memory_mb"], 0)]
            for c in cost_rows
        ],
    )
    (out / "costs.md").write_text(costs_md)
    return results_md, costs_md


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _wide_range(values: list[float]) -> bool:
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return len(positive) == len(values) and bool(positive) and max(positive) / min(positive) > 30


def _band(ax, results: list[RunResult], x_key: str, y_key: str, label: str) -> list[float]:
    """Mean over seeds with a min-max band, points at the x of the first seed; returns the plotted y values."""
    curves = [r.curve for r in results if r.curve]
    if not curves:
        return []
    length = min(len(c) for c in curves)
    xs = [statistics.fmean(c[i][x_key] for c in curves) for i in range(length)]
    ys = [[c[i][y_key] for c in curves] for i in range(length)]
    mean = [statistics.fmean(v) for v in ys]
    (line,) = ax.plot(xs, mean, marker="o", ms=3, label=label)
    if len(curves) > 1:
        ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], color=line.get_color(), alpha=0.2)
    return [v for vs in ys for v in vs]


def plot_curves(results: list[RunResult], metric: str, out: Path) -> Path:
    """``curves.png``: validation metric and training loss against steps, and the metric against training CPU seconds.

    One line per learner (mean over seeds), a band from the lowest to the highest seed; every
    validation point at the step where it was measured. Log axes only where values span more than 30x.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    plotted: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for name in dict.fromkeys(r.learner for r in results):
        runs = [r for r in results if r.learner == name]
        seeds = f"{len(runs)} seeds" if len(runs) > 1 else f"seed {runs[0].seed}"
        label = f"{name} ({seeds})"
        plotted[0] += _band(axes[0], runs, "step", "value", label)
        plotted[1] += _band(axes[1], runs, "step", "train_loss", label)
        plotted[2] += _band(axes[2], runs, "train_cpu_seconds", "value", label)
    titles = (
        (f"validation {metric}", "meta-training step"),
        ("training loss (mean since previous point)", "meta-training step"),
        (f"validation {metric}", "training CPU seconds (this machine)"),
    )
    for i, (ax, (ylabel, xlabel)) in enumerate(zip(axes, titles)):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if _wide_range(plotted[i]):
            ax.set_yscale("log")
    if any(plotted.values()):
        axes[0].legend(fontsize=8)
    return _save(fig, out / "curves.png")


def plot_final(rows: list[dict[str, Any]], out: Path) -> Path:
    """``final.png``: the test metric of each learner with its 95% CI."""
    plt = _pyplot()
    metric = rows[0]["metric"]
    fig, ax = plt.subplots(figsize=(1.5 * len(rows) + 2, 4))
    ax.bar(
        [r["learner"] for r in rows],
        [r["mean"] for r in rows],
        yerr=[0 if math.isnan(r["ci95"]) else r["ci95"] for r in rows],
        capsize=6,
    )
    ax.set_ylabel(f"test {metric} (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out / "final.png")


def plot_predictions(results: list[RunResult], out: Path) -> Optional[Path]:
    """``predictions.png`` (regression): each learner's prediction on the same held-out tasks (Finn et al. 2017, Fig. 2).

    One panel per task: the support points, the true function and each learner's prediction
    (its first seed). ``None`` when no run recorded predictions.
    """
    first = {}
    for r in results:
        if r.predictions and r.learner not in first:
            first[r.learner] = r.predictions
    if not first:
        return None
    plt = _pyplot()
    reference = next(iter(first.values()))
    n_tasks = len(reference["tasks"])
    fig, axes = plt.subplots(1, n_tasks, figsize=(4.2 * n_tasks, 3.6), squeeze=False)
    xs = reference["x"]
    for t, ax in enumerate(axes[0]):
        task = reference["tasks"][t]
        truth = [task["amplitude"] * math.sin(x - task["phase"]) for x in xs]
        ax.plot(xs, truth, color="black", lw=2, label="true function")
        for name, preds in first.items():
            ax.plot(xs, preds["tasks"][t]["pred"], lw=1.3, label=name)
        ax.scatter(task["support_x"], task["support_y"], color="red", zorder=5, label="support")
        ax.set_title(f"test task {t}: A={task['amplitude']:.2f}, phase={task['phase']:.2f}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, out / "predictions.png")
