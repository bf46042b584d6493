"""The learner contract: one call for every meta-learner, and the Lightning steps they share.

Every learner in rnnmeta is a function from a support set and query inputs to query predictions::

    preds = learner(support_x, support_y, query_x)
    # support_x [B, S, *x_shape]   support_y [B, S] int64 (classification) or [B, S, d_y] float
    # query_x   [B, M, *x_shape]   preds     [B, M, n_way] logits, or [B, M, d_y]

:class:`MetaLearner` owns everything the learners share: the loss for the task kind, accuracy,
logging (synchronised across ranks), the injected meta-optimiser and its schedule,
numerical-fault checks, and the evaluation protocol (mean and 95% CI over a fixed set of test
episodes, gathered from every rank). A subclass implements :meth:`MetaLearner.forward` (and,
where it can do better than re-reading the support set, :meth:`MetaLearner.adapt`) and nothing
of Lightning's plumbing.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal, Optional, Protocol

import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from rnnmeta.checkpoint import identity_differences
from rnnmeta.episode import CLASSIFICATION, REGRESSION, TASK_KINDS, Episode
from rnnmeta.evaluation import MeanCI, gather_episode_rows, mean_ci95
from rnnmeta.nets import backbone_spec
from rnnmeta.nets.factory import check_backbone_input
from rnnmeta.specs import callable_spec, import_class, partial_from_spec

#: Lightning's advice to ignore module arguments in save_hyperparameters: learners keep their
#: backbone among the hyperparameters on purpose (on_save_checkpoint stores it as its class_path spec).
_MODULE_HPARAM_ADVICE = r".*is an instance of `nn.Module` and is already saved during checkpointing.*"
#: Lightning's advice to sync epoch-level values across ranks: the evaluation statistics are computed
#: from the episodes of every rank before they are logged (see MetaLearner._eval_end).
_SYNC_DIST_ADVICE = r"It is recommended to use `self.log\('(val|test)/"


class Predictor(Protocol):
    """What :meth:`MetaLearner.adapt` returns: answers queries ``[B, M, *x_shape]`` for the adapted tasks."""

    def __call__(self, query_x: Tensor) -> Tensor: ...


class SupportSetPredictor:
    """Default predictor: keeps the support set and calls the learner on each new query batch."""

    def __init__(self, learner: "MetaLearner", support_x: Tensor, support_y: Tensor) -> None:
        self.learner, self.support_x, self.support_y = learner, support_x, support_y

    def __call__(self, query_x: Tensor) -> Tensor:
        return self.learner(self.support_x, self.support_y, query_x)


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss, gradient, weight or evaluation value becomes NaN or infinite."""


def check_optimizer_arguments(factory: Any) -> None:
    """Refuse an optimiser factory whose ``lr`` is not a finite number > 0 or ``weight_decay`` not finite >= 0.

    torch's own checks let ``lr=inf`` through (and the first step then writes NaN weights).
    """
    init_args = (callable_spec(factory) or {}).get("init_args", {})
    for name, low, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False)):
        if name not in init_args:
            continue
        value = init_args[name]
        relation = ">" if strict else ">="
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"optimizer {name} must be a finite number {relation} {low:g}, got {value!r} ({type(value).__name__})")
        if not math.isfinite(value) or (value <= low if strict else value < low):
            raise ValueError(f"optimizer {name} must be a finite number {relation} {low:g}, got {value}")


class InjectedOptimizerModule(pl.LightningModule):
    """A LightningModule whose optimiser and schedule are injected, as LightningCLI documents it.

    Shared by :class:`MetaLearner` (whose docstring describes ``optimizer`` and ``lr_scheduler``)
    and :class:`~rnnmeta.learners.OnlineMetaLearner`; both may also be ``class_path`` specs, the
    form checkpoints store them in.
    """

    def __init__(
        self, optimizer: OptimizerCallable = torch.optim.Adam, lr_scheduler: Optional[LRSchedulerCallable] = None
    ) -> None:
        super().__init__()
        self.optimizer_factory = partial_from_spec(optimizer, "optimizer")
        check_optimizer_arguments(self.optimizer_factory)
        self.lr_scheduler_factory = None if lr_scheduler is None else partial_from_spec(lr_scheduler, "lr_scheduler")

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets ``_current_fx_name`` around every hook it calls, a dozen times a training
        # step; ``nn.Module.__setattr__`` checks each assignment against the parameters, buffers and
        # submodules (0.36 ms of a sinusoid MAML step under cProfile; docs/PERFORMANCE.md). The name is a
        # plain string attribute, never a tensor or module, so it is set directly.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def configure_optimizers(self) -> Any:
        """The injected optimiser over the trainable parameters, and its schedule stepped every meta-iteration."""
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            schedule = {"scheduler": scheduler, "interval": "epoch", "monitor": "val/loss"}
        else:
            schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def meta_lr(self) -> Optional[float]:
        """The meta learning rate now (the trainer's optimiser), else the one configured; None if unknown."""
        trainer = self._trainer
        if trainer is not None and trainer.optimizers:
            return float(trainer.optimizers[0].param_groups[0]["lr"])
        spec = callable_spec(self.optimizer_factory)
        if spec is None:
            return None
        lr = spec["init_args"].get("lr")
        if lr is None:  # not given: the optimiser class's own default (Adam's 1e-3)
            try:
                lr = inspect.signature(import_class(spec["class_path"])).parameters["lr"].default
            except (KeyError, TypeError, ValueError):
                return None
        return float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None

    def _lr_advice(self) -> str:
        """``"lower the optimizer's lr (now 0.001)"``, for error messages."""
        lr = self.meta_lr()
        return f"lower the optimizer's lr{f' (now {lr:g})' if lr is not None else ''}"

    # ------------------------------------------------------------- evaluation: "val" and "test" alike
    def _eval_start(self, stage: str) -> None:
        """Forget the values of the previous ``stage`` (``"val"`` or ``"test"``) epoch."""

    def _eval_step(self, batch: Any, stage: str) -> None:
        """Evaluate one batch of a ``stage`` epoch and keep its values."""
        raise NotImplementedError(f"{type(self).__name__} must implement _eval_step(batch, stage)")

    def _eval_end(self, stage: str) -> None:
        """Summarise and log the values of the ``stage`` epoch."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the optimiser and schedule factories among the hyperparameters as ``class_path`` specs, so that the
        checkpoint loads with ``weights_only=True`` (Lightning's default, also when a run resumes from it)."""
        if checkpoint.get("hyper_parameters"):
            checkpoint["hyper_parameters"] = self.factories_as_specs(checkpoint["hyper_parameters"])

    def factories_as_specs(self, hparams: dict[str, Any]) -> dict[str, Any]:
        """``hparams`` with the optimiser and schedule factories as ``class_path`` specs (``weights_only`` checkpoints)."""
        hparams = dict(hparams)
        for key in ("optimizer", "lr_scheduler"):
            value = hparams.get(key)
            if value is not None and not isinstance(value, dict):
                why = f"{value!r} is not a class or a partial of one, so the checkpoint cannot record it"
                self._store_spec(hparams, key, callable_spec(value), why)
        return hparams

    def _store_spec(self, hparams: dict[str, Any], key: str, spec: Optional[dict], why: str) -> None:
        """Replace ``hparams[key]`` by ``spec``; without one, drop it with a warning saying ``why``."""
        if spec is not None:
            hparams[key] = spec
            return
        del hparams[key]
        rank_zero_warn(f"{type(self).__name__}: the {key} {why}; pass {key}= again when loading")


class MetaLearner(InjectedOptimizerModule):
    """Base class of every rnnmeta learner (a LightningModule).

    Args:
        kind: ``"classification"`` (cross-entropy, accuracy) or ``"regression"`` (MSE).
        n_way: classes per task; the width of the logits (classification only).
        target_dim: size ``d_y`` of a regression target (regression only).
        optimizer: the meta-optimiser, a factory ``params -> torch.optim.Optimizer`` (default
            ``torch.optim.Adam`` at its learning rate 1e-3). In a config, as LightningCLI documents
            it: ``optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 3e-4}}`` or
            ``--model.init_args.optimizer=AdamW --model.init_args.optimizer.lr=3e-4``; in code,
            ``functools.partial(torch.optim.Adam, lr=3e-4)``.
        lr_scheduler: optional schedule, a factory ``optimizer -> LRScheduler``, stepped once per
            meta-iteration (``{class_path: torch.optim.lr_scheduler.CosineAnnealingLR, init_args:
            {T_max: <max_steps>}}`` decays to 0 at the end of training); ``ReduceLROnPlateau``
            is stepped after each validation on ``val/loss``.

    Gradient clipping is the Trainer's (``trainer.gradient_clip_val``). A learner takes its own
    arguments and passes these five on with ``super().__init__(**kwargs)``; the constructor records
    the arguments of the whole chain as the hyperparameters, which checkpoints store.
    """

    #: Learners whose forward needs autograd at evaluation time (an inner loop) set this to True;
    #: their validation and test steps then run with gradients enabled outside inference mode.
    needs_grad_at_eval: bool = False

    def __init__(
        self,
        kind: Literal["classification", "regression"] = "classification",
        n_way: int = 5,
        target_dim: int = 1,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        if kind not in TASK_KINDS:
            raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
        for name, value in (("n_way", n_way), ("target_dim", target_dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
        if kind == CLASSIFICATION and n_way < 2:
            raise ValueError(f"n_way must be >= 2 for classification, got {n_way}")
        if kind == REGRESSION and target_dim < 1:
            raise ValueError(f"target_dim must be >= 1 for regression, got {target_dim}")
        self.kind = kind
        self.n_way = n_way
        self.target_dim = target_dim
        self._eval_values: dict[str, list[list[float]]] = {}  # stage -> per-episode [loss, metric]
        #: Per-episode metric of the last ``"val"``/``"test"`` epoch, gathered from all ranks, in
        #: episode order (float64, on the CPU); :attr:`eval_stats` holds its mean and 95% CI.
        self.eval_episode_values: dict[str, Tensor] = {}
        self.eval_stats: dict[str, MeanCI] = {}
        # the backbone module is kept in the hyper-parameters so that a checkpoint rebuilds a custom one
        self.save_hyperparameters()

    def save_hyperparameters(self, *args: Any, ignore: Any = None, frame: Any = None, logger: bool = True) -> None:
        """Lightning's ``save_hyperparameters``, without its advice to leave the backbone out (see :meth:`on_save_checkpoint`).

        Called from an ``__init__``, it records the arguments of that ``__init__`` and of the
        subclass ``__init__`` calls that led to it.
        """
        if frame is None:
            frame = inspect.currentframe().f_back  # the calling __init__, whose arguments are recorded
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_MODULE_HPARAM_ADVICE)
            super().save_hyperparameters(*args, ignore=ignore, frame=frame, logger=logger)

    # ------------------------------------------------------------------ contract
    @property
    def output_dim(self) -> int:
        """Width of a prediction: ``n_way`` logits, or ``target_dim`` regression outputs."""
        return self.n_way if self.kind == CLASSIFICATION else self.target_dim

    @property
    def metric_name(self) -> str:
        """The per-episode score: ``"acc"`` for classification, ``"mse"`` for regression."""
        return "acc" if self.kind == CLASSIFICATION else "mse"

    @property
    def transductive(self) -> bool:
        """Whether a query's prediction depends on the other queries of its task (batch norm over the query batch).

        False for the memory learners; MAML and the learned optimizer override it. Comparison
        tables print it as the evaluation protocol.
        """
        return False

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:  # noqa: D401
        """Predict the queries of each task from its support set (shapes: the module docstring).

        Args:
            support_x: ``[B, S, *x_shape]``.
            support_y: ``[B, S]`` int64 labels in ``0..n_way-1``, or ``[B, S, d_y]`` float targets.
            query_x: ``[B, M, *x_shape]``; returns ``[B, M, n_way]`` logits or ``[B, M, d_y]``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward(support_x, support_y, query_x)")

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Predictor:
        """Read the support set once and return a predictor ``query_x [B, M, *x] -> preds``.

        The default keeps the support set and re-runs :meth:`forward`; learners that can hold an
        adapted state (encoded support, fine-tuned weights) override it.
        """
        self.check_inputs(support_x, support_y)
        return SupportSetPredictor(self, support_x, support_y)

    def check_inputs(self, support_x: Tensor, support_y: Tensor, query_x: Optional[Tensor] = None) -> None:
        """Validate tensors passed by a user with a message that names the wrong one."""
        if query_x is None:
            query_x = support_x[:, :0]
        if self.kind == CLASSIFICATION and support_y.dtype != torch.int64:
            raise TypeError(f"support_y must be int64 class labels for a classification learner, got {support_y.dtype}")
        param = next(self.parameters(), None)
        for name, x in (("support_x", support_x), ("query_x", query_x)):
            # Integer inputs (token ids of text) are indices for an embedding layer, not values.
            if param is not None and x.is_floating_point() and x.dtype != param.dtype:
                raise TypeError(
                    f"{name} has dtype {x.dtype} but the learner's parameters are {param.dtype}: "
                    f"pass {param.dtype} inputs (x.to({param.dtype})) or convert the learner (learner.to({x.dtype}))"
                )
        # Episode performs the shape, dtype and label-range checks of the contract; the query
        # labels are placeholders of the right shape (a learner never sees them).
        placeholder = support_y
        if query_x.dim() >= 2 and support_y.dim() >= 1:
            placeholder = support_y.new_zeros((query_x.shape[0], query_x.shape[1], *support_y.shape[2:]))
        Episode(support_x, support_y, query_x, placeholder, **self._task_sizes())
        backbone = getattr(self, "backbone", None)
        if isinstance(backbone, nn.Module):
            for name, x in (("support_x", support_x), ("query_x", query_x)):
                check_backbone_input(backbone, x, name, owner=type(self).__name__)

    # ------------------------------------------------------------ loss & metrics
    def task_losses(self, preds: Tensor, query_y: Tensor) -> Tensor:
        """Per-task mean loss ``[B]``: cross-entropy over the logits, or squared error."""
        if self.kind == CLASSIFICATION:
            per_query = F.cross_entropy(preds.flatten(0, 1), query_y.flatten(), reduction="none")
            return per_query.view(query_y.shape).mean(1)
        return (preds - query_y).pow(2).flatten(1).mean(1)

    def task_metrics(self, preds: Tensor, query_y: Tensor) -> Tensor:
        """Per-task score ``[B]``: accuracy, or MSE."""
        with torch.no_grad():
            if self.kind == CLASSIFICATION:
                return (preds.argmax(-1) == query_y).float().mean(1)
            return (preds - query_y).pow(2).flatten(1).mean(1)

    def _check_episode(self, batch: Episode) -> None:
        if batch.kind != self.kind:
            raise ValueError(f"{type(self).__name__} was built for {self.kind} but the data gives {batch.kind} episodes")
        if self.kind == CLASSIFICATION and batch.n_way != self.n_way:
            raise ValueError(
                f"{type(self).__name__} was built for n_way={self.n_way} but the data gives {batch.n_way}-way episodes; "
                "set the learner's n_way to the data module's n_way"
            )
        if self.kind == REGRESSION and batch.support_y.shape[-1] != self.target_dim:
            raise ValueError(
                f"{type(self).__name__} was built for target_dim={self.target_dim} but the data gives targets of width "
                f"{batch.support_y.shape[-1]}; set the learner's target_dim to the data's d_y"
            )

    def episode_step(self, batch: Episode) -> tuple[Tensor, Tensor]:
        """Run the learner on an episode batch: (mean loss, per-task metric ``[B]``).

        The loss is the mean query loss plus the learner's auxiliary training loss, if it has one
        (:meth:`predict_with_auxiliary_loss`); the metric is the query metric alone.
        """
        self._check_episode(batch)
        preds, auxiliary = self.predict_with_auxiliary_loss(batch)
        loss = self.task_losses(preds, batch.query_y).mean()
        if auxiliary is not None:
            loss = loss + auxiliary
        return loss, self.task_metrics(preds, batch.query_y)

    def predict_with_auxiliary_loss(self, batch: Episode) -> tuple[Tensor, Optional[Tensor]]:
        """Query predictions of a training batch and an auxiliary loss to add to the query loss (``None``: none).

        The default is ``forward`` and no auxiliary loss; a learner with one (for example the
        sequence learners' ``metric_loss_weight``) overrides this and computes both from one pass.
        Evaluation never adds it.
        """
        return self(batch.support_x, batch.support_y, batch.query_x), None

    # ------------------------------------------------------------- Lightning steps
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """An :class:`Episode` moves itself (no copy where it is on ``device`` already); Lightning's
        generic walk over a batch's fields took 0.04 ms of a sinusoid MAML step under cProfile."""
        if isinstance(batch, Episode):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: Episode, batch_idx: int) -> Tensor:
        loss, metric = self.episode_step(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{type(self).__name__}: training loss is {loss.item()} at global step {self.global_step}; "
                f"{self._lr_advice()} or set trainer.gradient_clip_val"
            )
        if self.logs_this_step():
            bs = batch.batch_size
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            self.log(f"train/{self.metric_name}", metric.mean(), prog_bar=True, batch_size=bs)
        return loss

    def logs_this_step(self) -> bool:
        """Whether this training step's values reach the logger (every ``trainer.log_every_n_steps`` steps).

        Recording a value Lightning does not write cost about a fifth of a sinusoid MAML step
        (docs/PERFORMANCE.md), so the other steps skip it.
        """
        connector = getattr(self._trainer, "_logger_connector", None)
        try:
            return connector is None or bool(connector.should_update_logs)
        except (AttributeError, NotImplementedError):  # outside a fit loop, or another Lightning version
            return True

    def eval_episode_step(self, batch: Episode) -> tuple[Tensor, Tensor]:
        """Per-task loss ``[B]`` and per-task metric ``[B]`` of an evaluation batch, detached."""
        self._check_episode(batch)
        preds = self(batch.support_x, batch.support_y, batch.query_x)
        return self.task_losses(preds, batch.query_y).detach(), self.task_metrics(preds, batch.query_y).detach()

    def _eval_step(self, batch: Episode, stage: str) -> None:
        if self.needs_grad_at_eval:
            # An inner loop needs autograd: leave inference mode, take the batch out of it, and
            # make sure nothing of the graph outlives the step (losses and metrics are detached).
            with torch.inference_mode(False), torch.enable_grad():
                tensors = (t.clone() for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
                batch = Episode(*tensors, kind=batch.kind, n_way=batch.n_way, target_dim=batch.target_dim)
                losses, metric = self.eval_episode_step(batch)
        else:
            losses, metric = self.eval_episode_step(batch)
        # Per-episode values only, summarised at the end of the epoch over every rank. Kept as Python
        # floats: a thousand small long-lived tensors interleaved with an inner loop's transient buffers
        # fragment the native heap (RSS grew ~25 MiB per 1,000 episodes that way).
        values = self._eval_values.setdefault(stage, [])
        values.extend(torch.stack([losses.double(), metric.double()], 1).tolist())

    def _eval_start(self, stage: str) -> None:
        self._eval_values[stage] = []

    def _eval_end(self, stage: str) -> None:
        local = self._eval_values.pop(stage, [])
        values = torch.tensor(local, dtype=torch.float64).reshape(-1, 2)
        values = gather_episode_rows(self, values)  # [n_episodes, 2] of every rank in episode order: loss, metric
        if values.shape[0] == 0:
            return
        losses, metric = values[:, 0], values[:, 1]
        self._check_finite_eval(stage, values)
        stats = mean_ci95(metric)
        self.eval_episode_values[stage] = metric
        self.eval_stats[stage] = stats
        name = f"{stage}/{self.metric_name}"
        # Every rank holds the same gathered values, so the numbers are already global: logging
        # them with sync_dist would only average identical numbers.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SYNC_DIST_ADVICE)
            self.log(f"{stage}/loss", float(losses.mean()), sync_dist=False, rank_zero_only=False)
            self.log(name, stats.mean, prog_bar=True, sync_dist=False, rank_zero_only=False)
            if stats.n > 1:
                self.log(f"{name}_ci95", stats.ci95, sync_dist=False, rank_zero_only=False)
            self.log(f"{stage}/episodes", float(stats.n), sync_dist=False, rank_zero_only=False)

    def _eval_hint(self) -> str:
        """What to change when evaluation diverges: the learner's evaluation settings, then the training ones."""
        bad = [n for n, p in self.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            return (
                f"the weights themselves hold NaN or infinity ({bad[:3]}): training diverged; {self._lr_advice()}, "
                "set trainer.gradient_clip_val, or evaluate an earlier checkpoint"
            )
        settings = [
            f"{name} (now {getattr(self, name):g})"
            for name in ("eval_inner_lr", "eval_inner_steps")
            if isinstance(getattr(self, name, None), (int, float)) and not isinstance(getattr(self, name), bool)
        ]
        if settings:
            return (
                f"the inner loop at evaluation diverged: lower {' or '.join(settings)}; "
                f"if training diverged too, {self._lr_advice()} or set trainer.gradient_clip_val"
            )
        return f"the weights diverged: {self._lr_advice()}, set trainer.gradient_clip_val, or evaluate an earlier checkpoint"

    def _check_finite_eval(self, stage: str, values: Tensor) -> None:
        """Refuse an evaluation whose per-episode loss or metric is NaN or infinite, naming learner, stage and fix."""
        bad = ~torch.isfinite(values).all(1)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise NonFiniteLossError(
                f"{type(self).__name__}: {stage} evaluation gave a non-finite loss or {self.metric_name} in "
                f"{int(bad.sum())} of {values.shape[0]} episodes (first: episode {first}) at global step "
                f"{self.global_step}; {self._eval_hint()}"
            )

    # ------------------------------------------------------------- optimisation
    def on_before_optimizer_step(self, optimizer) -> None:
        # The optimiser's own parameters (no walk over the module tree) and one fused norm over
        # their gradients: as a per-tensor loop this check took 0.19 ms of a sinusoid MAML step under cProfile.
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            if not torch.isfinite(norm):
                bad = [n for n, p in self.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
                raise NonFiniteLossError(
                    f"{type(self).__name__}: non-finite meta-gradient at global step {self.global_step} in {bad[:5]}"
                )

    # ------------------------------------------------------------- checkpoints
    def _task_sizes(self) -> dict[str, Any]:
        """``kind``, ``n_way`` and ``target_dim`` as an Episode takes them (0 where unused)."""
        n_way = self.n_way if self.kind == CLASSIFICATION else 0
        return {"kind": self.kind, "n_way": n_way, "target_dim": self.target_dim if self.kind == REGRESSION else 0}

    def checkpoint_identity(self) -> dict[str, object]:
        """What a checkpoint of this learner must agree on to be loaded into it."""
        return {"learner": f"{type(self).__module__}.{type(self).__qualname__}", **self._task_sizes()}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Refuse to write non-finite weights; record the learner's identity; store backbones as specs.

        Raises:
            NonFiniteLossError: a floating tensor of the state dict holds NaN or infinity (the last
                optimiser step diverged); nothing is written, earlier checkpoints stay as they are.
        """
        state = checkpoint.get("state_dict") or {}
        bad = [k for k, v in state.items() if isinstance(v, Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteLossError(
                f"{type(self).__name__}: refusing to write a checkpoint at global step {self.global_step}: "
                f"{len(bad)} of {len(state)} tensors hold NaN or infinity ({bad[:5]}); the meta-update diverged: "
                f"{self._lr_advice()}, set trainer.gradient_clip_val, or resume from the last good checkpoint"
            )
        checkpoint["rnnmeta"] = self.checkpoint_identity()
        super().on_save_checkpoint(checkpoint)  # the optimiser factories as specs
        # Modules among the hyperparameters (a backbone) are stored as their class_path specs too, so the
        # checkpoint loads with weights_only=True and load_from_checkpoint rebuilds them.
        hparams = checkpoint.get("hyper_parameters")
        if hparams:
            for key, value in list(hparams.items()):
                if isinstance(value, nn.Module):
                    why = f"{type(value).__name__} does not record its init_args, so the checkpoint cannot rebuild it"
                    self._store_spec(hparams, key, backbone_spec(value), why)
            checkpoint["hyper_parameters"] = hparams

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("rnnmeta")
        if saved is None:
            return  # not written by rnnmeta: the state dict load reports any mismatch
        mine = self.checkpoint_identity()
        differing = identity_differences(saved, mine)
        if differing:
            key = differing[0]
            raise ValueError(
                f"checkpoint was saved from {saved.get('learner')} with {key}={saved.get(key)!r}, but it is being "
                f"loaded into {mine['learner']} with {key}={mine[key]!r}; use the config the checkpoint was "
                "trained with (config.yaml in its run folder)"
            )

    def num_parameters(self) -> int:
        """Number of meta-learned parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
