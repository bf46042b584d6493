"""The shipped comparison configs (``configs/compare/*.yaml``), narrowed for a script's run.

Scripts that train learners do it through :func:`rnnmeta.compare.compare`, from the same configs
``rnnmeta compare --config`` reads, so a script's number and a comparison table come from one
setup. :func:`narrowed` keeps some learners and changes what a script's options change (the step
budget, the number of evaluation episodes, where Omniglot is, the output folder); nothing else.

Imported by the scripts beside it (``python scripts/<script>.py`` puts ``scripts/`` on the path).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPARE_CONFIGS = REPO / "configs" / "compare"

__all__ = ["COMPARE_CONFIGS", "REPO", "learner_row", "load", "narrowed"]


def load(name: str) -> dict[str, Any]:
    """``configs/compare/<name>.yaml`` as a dict (the keyword arguments of :func:`rnnmeta.compare.compare`)."""
    path = COMPARE_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in COMPARE_CONFIGS.glob("*.yaml")))
        raise SystemExit(f"no comparison config {path}; known: {known}")
    return yaml.safe_load(path.read_text())


def learner_row(config_path: str, learner: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The comparison config at ``config_path`` and its learner ``learner``'s ``model`` spec.

    Raises:
        SystemExit: the config has no such learner (naming the ones it has).
    """
    config = yaml.safe_load(Path(config_path).read_text())
    if learner not in config["learners"]:
        raise SystemExit(f"{config_path} has no learner {learner!r}; it has {sorted(config['learners'])}")
    return config, config["learners"][learner]["model"]


def narrowed(
    config: dict[str, Any],
    learners: Optional[Sequence[str]] = None,
    steps: Optional[int] = None,
    val_episodes: Optional[int] = None,
    test_episodes: Optional[int] = None,
    omniglot_root: Optional[str] = None,
    output_dir: Optional[str] = None,
    workers: Optional[int] = None,
    seeds: Optional[Sequence[int]] = None,
    cpu_minutes: Optional[float] = None,
) -> dict[str, Any]:
    """A copy of ``config`` with only ``learners`` and the given settings changed.

    ``steps`` replaces every budget (the comparison's and each learner's own ``max_steps``, a CPU or
    wall-clock budget) with that many meta-training steps, and sets the ``T_max`` of a learner's
    cosine schedule to it, so the schedule still ends at the last step. ``cpu_minutes`` replaces every
    budget with that many CPU-minutes of training (not with ``steps``).

    Raises:
        SystemExit: a learner that the config does not have (naming the ones it has), or both budgets.
    """
    config = copy.deepcopy(config)
    if learners is not None:
        missing = [name for name in learners if name not in config["learners"]]
        if missing:
            raise SystemExit(f"{config['name']}: no learner {missing}; it has {sorted(config['learners'])}")
        config["learners"] = {name: config["learners"][name] for name in learners}
        if config.get("reference") not in config["learners"]:  # the paired column then compares with the best row
            config.pop("reference", None)
    if steps is not None and cpu_minutes is not None:
        raise SystemExit("give a step budget or a CPU-minute budget, not both")
    if cpu_minutes is not None:
        for key in ("max_steps", "max_wall_minutes"):
            config.pop(key, None)
        config["max_cpu_minutes"] = cpu_minutes
        for run in config["learners"].values():
            run.pop("max_steps", None)
    if steps is not None:
        for key in ("max_cpu_minutes", "max_wall_minutes"):
            config.pop(key, None)
        config["max_steps"] = steps
        for run in config["learners"].values():
            run["max_steps"] = steps
            schedule = (run["model"].get("init_args") or {}).get("lr_scheduler")
            if isinstance(schedule, dict) and schedule.get("class_path", "").endswith("CosineAnnealingLR"):
                schedule.setdefault("init_args", {})["T_max"] = steps
    data = config["data"]["init_args"]
    if val_episodes is not None:
        data["val_episodes"] = val_episodes
    if test_episodes is not None:
        data["test_episodes"] = test_episodes
    if omniglot_root is not None and data["dataset"]["class_path"].endswith("Omniglot"):
        data["dataset"].setdefault("init_args", {})["root"] = omniglot_root
    for key, value in (("output_dir", output_dir), ("workers", workers), ("seeds", list(seeds) if seeds else None)):
        if value is not None:
            config[key] = value
    return config
