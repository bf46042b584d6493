"""What a comparison is: its typed config, the checks run before any training, and one plan per run.

A comparison config (``configs/compare/*.yaml``) names a shared data module, a budget, seeds and
the learners; each learner may override the *training side* of the data (meta-batch size, queries,
shots: the papers train SNAIL with one query per sequence and MAML with 15 per class) while the
validation and test episodes stay identical for all. Everything is checked here, before the first
run starts: a typo in the last learner's config fails in seconds with the key named.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from rnnmeta.data import EpisodicDataModule
from rnnmeta.learners import MetaLearner
from rnnmeta.numerics import check_numerics, portable_unsupported_reason
from rnnmeta.specs import LINKED_FROM_DATA, link_data_to_model

__all__ = [
    "Budget",
    "ComparisonConfigError",
    "LearnerRun",
    "RunPlan",
    "TrainingProtocol",
    "build_learner",
    "build_run",
    "check_name",
    "int_at_least",
    "config_diff",
    "plan_runs",
    "with_added_defaults",
]


class ComparisonConfigError(ValueError):
    """A comparison config that cannot run: the message names the key, the value and what was expected."""


@dataclass
class TrainingProtocol:
    """Training-side data settings one learner may change (validation and test episodes never change).

    Args:
        meta_batch_size: tasks per training step.
        q_queries: queries per class in training.
        k_shot: support examples per class in training (the least, with ``k_shot_max``).
        k_shot_max: draw ``K`` uniformly from ``k_shot..k_shot_max`` per training batch (SNAIL: 1..5).
        word_dropout: text datasets only: the probability that a token of a training text is deleted
            (:class:`~rnnmeta.data.TextDataset`'s ``word_dropout``; the validation and test texts
            stay whole, so the learners still share their episodes).
    """

    meta_batch_size: Optional[int] = None
    q_queries: Optional[int] = None
    k_shot: Optional[int] = None
    k_shot_max: Optional[int] = None
    word_dropout: Optional[float] = None


@dataclass
class LearnerRun:
    """One learner of a comparison.

    Args:
        model: the learner, as ``rnnmeta fit`` takes it (``class_path`` and ``init_args``).
        max_steps: this learner's number of meta-training steps, instead of the comparison's
            ``max_steps`` (learners converge at different rates; the table prints each one's steps).
        threads: torch intra-op threads of this learner's runs, instead of the comparison's.
        train_data: training-side data overrides (:class:`TrainingProtocol`).
        trainer: Trainer arguments of this learner's runs on top of the comparison's ``trainer``
            section, e.g. ``{gradient_clip_val: 1.0}`` for a recurrent learner.
        lr_decay_to: decay the meta learning rate with a cosine over this learner's budget (steps,
            CPU or wall-clock minutes) down to this fraction of the configured rate
            (:class:`~rnnmeta.budget_schedule.BudgetCosineLR`); None keeps the learner's own schedule.
    """

    model: MetaLearner
    max_steps: Optional[int] = None
    threads: Optional[int] = None
    train_data: TrainingProtocol = field(default_factory=TrainingProtocol)
    trainer: dict[str, Any] = field(default_factory=dict)
    lr_decay_to: Optional[float] = None


@dataclass(frozen=True)
class Budget:
    """How long each run trains: meta-training steps, CPU-seconds of training, or wall-clock seconds.

    Steps are the default and make a comparison a pure function of its config on any machine.
    CPU and wall-clock budgets count the training steps only (validation excluded); a wall-clock
    budget depends on what else the machine runs, and tables say so.
    """

    max_steps: Optional[int] = None
    max_cpu_seconds: Optional[float] = None
    max_wall_seconds: Optional[float] = None

    def describe(self) -> str:
        parts = []
        if self.max_steps is not None:
            parts.append(f"{self.max_steps} steps")
        if self.max_cpu_seconds is not None:
            parts.append(f"{self.max_cpu_seconds / 60:g} CPU-min")
        if self.max_wall_seconds is not None:
            parts.append(f"{self.max_wall_seconds / 60:g} wall-min (depends on machine load)")
        return " or ".join(parts)


@dataclass
class RunPlan:
    """One learner x seed, fully resolved: what is built, how long it trains, and its fingerprint."""

    learner: str
    seed: int
    model: dict[str, Any]
    data: dict[str, Any]
    budget: Budget
    threads: int
    trainer: dict[str, Any]
    target: Optional[float]
    lr_decay_to: Optional[float] = None
    numerics: str = "native"

    @property
    def run_name(self) -> str:
        return f"{self.learner}-seed{self.seed}"

    def resolved(self) -> dict[str, Any]:
        """Everything that decides the run's result (the fingerprint's input)."""
        return {
            "learner": self.learner,
            "seed": self.seed,
            "model": self.model,
            "data": self.data,
            "budget": self.budget.__dict__,
            "threads": self.threads,
            # how a run is shown does not change what it computes
            "trainer": {k: v for k, v in self.trainer.items() if k != "enable_progress_bar"},
            # only when set, so that the runs made before this option keep their fingerprints
            **({} if self.lr_decay_to is None else {"lr_decay_to": self.lr_decay_to}),
            **({} if self.numerics == "native" else {"numerics": self.numerics}),
        }

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.resolved(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Trainer arguments a comparison sets itself: a user value would break the budget or the records.
_RESERVED_TRAINER_KEYS = {
    "logger": "each run logs to W&B and CSV in its run folder",
    "callbacks": "the comparison adds its own monitor and checkpoints",
    "max_steps": "set max_steps at the top of the comparison or per learner",
    "max_time": "set max_cpu_minutes or max_wall_minutes at the top of the comparison",
    "max_epochs": "the budget is in steps, CPU or wall-clock minutes",
    "default_root_dir": "runs are written under output_dir/name/runs/",
}


def check_name(what: str, value: Any) -> str:
    """A plain name (letters, digits, ``-``, ``_``, ``.``; not ``.`` or ``..``) that is safe as one path component."""
    if not isinstance(value, str) or not _PLAIN_NAME.match(value) or ".." in value or value == ".":
        raise ComparisonConfigError(
            f"{what} {value!r} is not a plain name: use letters, digits, '-', '_' and '.' (not '..'), "
            "since it becomes a folder name"
        )
    return value


def _parser():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(EpisodicDataModule, "data", required=True)
    parser.add_argument("--learners", type=dict[str, LearnerRun], required=True)
    return parser


def _normalise_learner(name: str, spec: Any) -> Any:
    """Accept ``{class_path, init_args}`` as shorthand for ``{model: {class_path, init_args}}``."""
    if isinstance(spec, dict) and "class_path" in spec and "model" not in spec:
        return {"model": spec}
    if not isinstance(spec, dict) or "model" not in spec:
        raise ComparisonConfigError(
            f"learner {name!r} must be a mapping with model: {{class_path: ..., init_args: ...}} "
            f"(and optionally max_steps, threads, train_data, trainer), got {spec!r}"
        )
    return spec


def validate_specs(data: Any, learners: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Type-check the data module and learner configs (every key of every learner) without building them.

    Returns the resolved configs (defaults filled in) as plain dicts.
    """
    if not isinstance(learners, dict) or not learners:
        raise ComparisonConfigError(f"learners must be a non-empty mapping of name -> learner, got {learners!r}")
    for name in learners:
        check_name("learner name", name)
    normalised = {name: _normalise_learner(name, spec) for name, spec in learners.items()}
    parser = _parser()
    try:
        cfg = parser.parse_object({"data": data, "learners": normalised})
    except Exception as err:  # jsonargparse reports the key path and the offending value; name the learner too
        for name, spec in normalised.items():
            try:
                parser.parse_object({"data": data, "learners": {name: spec}})
            except Exception as one:
                raise ComparisonConfigError(f"learner {name!r}: {one}") from None
        raise ComparisonConfigError(f"comparison config: {err}") from None
    return cfg.data.as_dict(), {name: run.as_dict() for name, run in cfg.learners.items()}


def build_run(model: dict[str, Any], data: dict[str, Any]) -> tuple[EpisodicDataModule, MetaLearner]:
    """Instantiate a data module and a learner from their ``class_path`` configs (as ``rnnmeta fit`` takes them)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MetaLearner, "model", required=True)
    parser.add_subclass_arguments(EpisodicDataModule, "data", required=True)
    link_data_to_model(parser)
    objs = parser.instantiate_classes(parser.parse_object({"model": model, "data": data}))
    return objs.data, objs.model


def build_learner(data: dict[str, Any], run: dict[str, Any]) -> tuple[EpisodicDataModule, MetaLearner]:
    """The data module and learner of one run of a comparison, as the comparison builds them.

    ``data`` and ``run`` are :func:`validate_specs`' outputs (the shared data config, and one learner's
    entry); the learner's ``train_data`` overrides apply to its training side only.
    """
    return build_run(run["model"], _training_data(data, run.get("train_data") or {}))


def int_at_least(what: str, value: Any, low: int = 1) -> int:
    """``value`` if it is an integer >= ``low`` (a learner's own ``max_steps`` may be 0: a training-free baseline)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ComparisonConfigError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


def _check_seeds(seeds: Any) -> list[int]:
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ComparisonConfigError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ComparisonConfigError(f"seeds must be integers >= 0, got {seed!r} in {list(seeds)}")
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ComparisonConfigError(f"seeds {list(seeds)} repeat {repeated}: each seed is one run, list it once")
    return list(seeds)


def _check_trainer(trainer: Optional[dict], where: str = "trainer") -> dict[str, Any]:
    import pytorch_lightning as pl

    trainer = dict(trainer or {})
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key in _RESERVED_TRAINER_KEYS:
            raise ComparisonConfigError(f"{where}.{key} is set by the comparison: {_RESERVED_TRAINER_KEYS[key]}")
        if key not in accepted:
            close = [k for k in sorted(accepted) if k.split("_")[0] == key.split("_")[0]][:5]
            raise ComparisonConfigError(
                f"{where}.{key} is not a pytorch_lightning.Trainer argument" + (f" (did you mean one of {close}?)" if close else "")
            )
    return trainer


def _budget(max_steps: Any, max_cpu_minutes: Any, max_wall_minutes: Any, every_learner_has_steps: bool) -> Budget:
    if max_steps is None and max_cpu_minutes is None and max_wall_minutes is None and not every_learner_has_steps:
        raise ComparisonConfigError(
            "a comparison needs a budget: max_steps (reproducible), max_cpu_minutes or max_wall_minutes "
            "(or max_steps on every learner)"
        )
    if max_steps is not None:
        int_at_least("max_steps", max_steps)
    for what, minutes in (("max_cpu_minutes", max_cpu_minutes), ("max_wall_minutes", max_wall_minutes)):
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not minutes > 0):
            raise ComparisonConfigError(f"{what} must be a number > 0, got {minutes!r}")
    return Budget(
        max_steps,
        None if max_cpu_minutes is None else float(max_cpu_minutes) * 60,
        None if max_wall_minutes is None else float(max_wall_minutes) * 60,
    )


def _training_data(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The shared data config with a learner's training-side overrides; evaluation episodes pinned to the shared ones."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not overrides:
        return data
    shared = data["init_args"]
    init_args = dict(shared)
    word_dropout = overrides.pop("word_dropout", None)
    if word_dropout is not None:  # a setting of the dataset (resolved to {class_path, init_args}), for its training split
        dataset = shared["dataset"]
        init_args["dataset"] = {**dataset, "init_args": {**(dataset.get("init_args") or {}), "word_dropout": word_dropout}}
    init_args.update(overrides)
    init_args["eval_k_shot"] = shared.get("eval_k_shot") or shared.get("k_shot", 1)
    init_args["eval_q_queries"] = shared.get("eval_q_queries") or shared.get("q_queries", 15)
    return {**data, "init_args": init_args}


def plan_runs(
    data: Any,
    learners: Any,
    seeds: Any,
    max_steps: Any,
    max_cpu_minutes: Any,
    max_wall_minutes: Any,
    threads: Any,
    trainer: Optional[dict],
    target: Optional[float],
    numerics: Any = "native",
) -> list[RunPlan]:
    """Check the whole comparison and return its runs (learner-major order); nothing is trained or written.

    Every learner and its data module are built once here, so a wrong key, type or value, or a
    learner that does not fit the data (task kind, ``n_way``), fails before the first run.
    ``numerics`` is ``native``, ``portable`` or ``auto`` (:func:`rnnmeta.compare.compare`).

    Raises:
        ComparisonConfigError: the first problem found, naming the key and the value.
    """
    seeds = _check_seeds(seeds)
    int_at_least("threads", threads)
    trainer = _check_trainer(trainer)
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        raise ComparisonConfigError(f"target must be a number, got {target!r}")
    data_cfg, runs = validate_specs(data, learners)
    budget = _budget(max_steps, max_cpu_minutes, max_wall_minutes, all(r.get("max_steps") is not None for r in runs.values()))
    numerics = _numerics(numerics, budget.max_cpu_seconds is None and budget.max_wall_seconds is None)
    plans = []
    for name, run in runs.items():
        run_data = _training_data(data_cfg, run.get("train_data") or {})
        try:
            datamodule, learner = build_run(run["model"], run_data)
        except Exception as err:
            raise ComparisonConfigError(f"learner {name!r} cannot be built: {err}") from None
        # the task is stated once, in data: the learner's kind and n_way are linked from it
        run["model"]["init_args"].update({key: getattr(datamodule, key) for key in LINKED_FROM_DATA})
        learner_budget = budget if run.get("max_steps") is None else Budget(
            int_at_least(f"learners.{name}.max_steps", run["max_steps"], 0), budget.max_cpu_seconds, budget.max_wall_seconds
        )
        run_threads = threads if run.get("threads") is None else int_at_least(f"learners.{name}.threads", run["threads"])
        run_trainer = {**trainer, **_check_trainer(run.get("trainer"), f"learners.{name}.trainer")}
        _check_schedule_length(name, run["model"], learner_budget)
        lr_decay_to = _check_lr_decay(name, run["model"], run.get("lr_decay_to"))
        for seed in seeds:
            plans.append(
                RunPlan(name, seed, run["model"], run_data, learner_budget, run_threads, run_trainer, target, lr_decay_to, numerics)
            )
    return plans


def _numerics(numerics: Any, steps_only: bool) -> str:
    """``native`` or ``portable`` (:mod:`rnnmeta.numerics`); ``auto``: portable when the budget is in steps alone.

    A step budget makes the table a function of the config, so ``auto`` makes it the same on any
    x86 CPU too; a CPU or wall-clock budget already depends on the machine, and keeps its speed.
    On a machine that cannot run portable numerics (not x86 with AVX2) ``auto`` is native, with a
    warning; ``portable`` is refused there.
    """
    unsupported = portable_unsupported_reason()
    if numerics == "auto":
        if not steps_only:
            return "native"
        if unsupported:
            warnings.warn(f"numerics: native ({unsupported}): this table is reproducible on this machine only", stacklevel=3)
            return "native"
        return "portable"
    try:
        numerics = check_numerics(numerics)
    except ValueError as err:
        raise ComparisonConfigError(f"{err} (or 'auto')") from None
    if numerics == "portable" and unsupported:
        raise ComparisonConfigError(f"numerics: portable cannot run here: {unsupported}; use native or auto")
    return numerics


def _check_lr_decay(name: str, model: dict[str, Any], lr_decay_to: Any) -> Optional[float]:
    """A learner's ``lr_decay_to``: None, or a number in [0, 1] on a learner without an ``lr_scheduler``."""
    if lr_decay_to is None:
        return None
    if isinstance(lr_decay_to, bool) or not isinstance(lr_decay_to, (int, float)) or not 0.0 <= lr_decay_to <= 1.0:
        raise ComparisonConfigError(
            f"learners.{name}.lr_decay_to must be a number in [0, 1] (the final fraction of the learning rate), "
            f"got {lr_decay_to!r}"
        )
    if (model.get("init_args") or {}).get("lr_scheduler") is not None:
        raise ComparisonConfigError(
            f"learner {name!r} has both lr_decay_to and model.init_args.lr_scheduler: both set the learning "
            "rate, keep one"
        )
    return float(lr_decay_to)


def _check_schedule_length(name: str, model: dict[str, Any], budget: Budget) -> None:
    """Refuse a cosine schedule whose ``T_max`` is not the learner's step budget (it would not end at 0, or restart)."""
    schedule = (model.get("init_args") or {}).get("lr_scheduler") or {}
    if not isinstance(schedule, dict) or not str(schedule.get("class_path", "")).endswith("CosineAnnealingLR"):
        return
    t_max = (schedule.get("init_args") or {}).get("T_max")
    if budget.max_steps is not None and t_max != budget.max_steps:
        raise ComparisonConfigError(
            f"learner {name!r}: lr_scheduler CosineAnnealingLR has T_max={t_max} but the learner trains "
            f"max_steps={budget.max_steps} steps; set T_max to {budget.max_steps} so the schedule ends at the budget"
        )


def _defaults(class_path: str) -> dict[str, Any]:
    """The constructor defaults of ``class_path`` (and of the parents its ``**kwargs`` reach), as JSON values; {} if unknown."""
    from rnnmeta.specs import import_class

    try:
        cls = import_class(class_path)
    except (ValueError, TypeError):
        return {}
    defaults: dict[str, Any] = {}
    for klass in cls.__mro__:  # a constructor's **kwargs reach its parent's (CLINC150 -> TextDataset)
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        for name, p in parameters.items():
            if p.default is not inspect.Parameter.empty and name not in defaults:
                defaults[name] = json.loads(json.dumps(p.default, default=str))
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            break
    return defaults


def with_added_defaults(old: Any, new: Any, prefix: str = "") -> tuple[Any, list[str]]:
    """``old`` with the ``init_args`` that ``new`` has and ``old`` lacks filled in, where ``new`` holds their default.

    A run recorded before an argument existed was built as if it had the argument's default: rnnmeta
    adds arguments with defaults that keep the earlier behaviour. Walks every ``{class_path,
    init_args}`` pair of the two resolved configs (learner, backbone, data module, dataset) with the
    same ``class_path``. Returns the filled copy and the dotted paths that were filled.
    """
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return old, []
    filled, added = dict(old), []
    same_class = isinstance(old.get("class_path"), str) and old.get("class_path") == new.get("class_path")
    old_args, new_args = old.get("init_args"), new.get("init_args")
    if same_class and isinstance(old_args, dict) and isinstance(new_args, dict):
        defaults = _defaults(old["class_path"])
        args = dict(old_args)
        for key in new_args.keys() - old_args.keys():
            if key in defaults and defaults[key] == new_args[key]:
                args[key] = new_args[key]
                added.append(f"{prefix}.init_args.{key}" if prefix else f"init_args.{key}")
        filled["init_args"] = args
    for key in filled.keys() & new.keys():
        path = f"{prefix}.{key}" if prefix else str(key)
        filled[key], inner = with_added_defaults(filled[key], new[key], path)
        added.extend(inner)
    return filled, sorted(set(added))


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences ``key: old -> new`` between two resolved run configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{path}: {old[key]!r} -> (absent)")
            else:
                out.extend(config_diff(old[key], new[key], path))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]
