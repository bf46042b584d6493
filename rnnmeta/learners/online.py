"""Meta-training and evaluation of sequence learners on the online protocol (Santoro et al. 2016).

A *stream learner* is any module with ``predict_stream(x [B, T, *x], prev_y [B, T]) -> logits [B, T, N]``
where step ``t`` may use ``x_0..x_t`` and ``prev_y_0..prev_y_t`` (``prev_y_t = y_{t-1}``, and
:data:`~rnnmeta.data.online.NO_LABEL` at ``t = 0``): so the prediction of ``y_t`` never sees ``y_t``.
:class:`~rnnmeta.learners.lstm.LSTMLearner` and :class:`~rnnmeta.learners.mann.MANN` implement it.

:class:`OnlineMetaLearner` meta-trains a stream learner on :class:`~rnnmeta.data.online.OnlineDataModule`
batches and reports per-instance test accuracy (:func:`per_instance_accuracy`) with 95% confidence intervals.

Reference:
    A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap. "Meta-learning with
    memory-augmented neural networks". ICML 2016 (Table 1: MANN 82.8% at the 2nd instance and
    94.9% at the 5th on 5-way Omniglot, after 100,000 training episodes).
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence, runtime_checkable

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnmeta.data.online import NO_LABEL, OnlineStream
from rnnmeta.evaluation import gather_episode_rows
from rnnmeta.learners.base import InjectedOptimizerModule
from rnnmeta.learners.sequence import LABEL_READOUT_SCALE

__all__ = [
    "REPORTED_INSTANCES",
    "SANTORO_MANN",
    "OnlineMetaLearner",
    "StreamLearner",
    "check_stream_inputs",
    "encode_previous_labels",
    "format_table",
    "per_instance_accuracy",
]

#: instance numbers Santoro et al. (2016) report
REPORTED_INSTANCES: tuple[int, ...] = (1, 2, 3, 5, 10)
#: MANN accuracy on 5-way Omniglot, online protocol (Santoro et al. 2016, Table 1), by instance number
SANTORO_MANN: dict[int, float] = {2: 0.828, 5: 0.949}


@runtime_checkable
class StreamLearner(Protocol):
    """A learner of the online protocol: causal logits ``[B, T, N]`` from inputs and one-step-late labels."""

    n_way: int

    def predict_stream(self, x: Tensor, prev_y: Tensor) -> Tensor: ...


def check_stream_inputs(x: Tensor, prev_y: Tensor, n_way: int) -> None:
    """Raise a clear error unless ``x [B, T, *x]`` and ``prev_y [B, T]`` int64 in ``{NO_LABEL} u 0..n_way-1`` agree."""
    if not isinstance(x, Tensor) or not isinstance(prev_y, Tensor):
        raise TypeError(f"x and prev_y must be tensors, got {type(x).__name__} and {type(prev_y).__name__}")
    if prev_y.dtype != torch.int64 or prev_y.dim() != 2:
        raise TypeError(
            f"prev_y must be [B, T] int64 labels (NO_LABEL={NO_LABEL} for none), got {prev_y.dtype} {list(prev_y.shape)}"
        )
    if x.dim() < 3 or x.shape[:2] != prev_y.shape:
        raise ValueError(f"x must be [B, T, *x_shape] with [B, T] = {list(prev_y.shape)} of prev_y, got {list(x.shape)}")
    if prev_y.numel() and (int(prev_y.min()) < NO_LABEL or int(prev_y.max()) >= n_way):
        raise ValueError(
            f"prev_y must hold labels in 0..{n_way - 1} or NO_LABEL={NO_LABEL}, got values in "
            f"{int(prev_y.min())}..{int(prev_y.max())}"
        )


def encode_previous_labels(prev_y: Tensor, n_way: int) -> Tensor:
    """``[B, T] -> [B, T, n_way]`` float: one-hot of ``prev_y``, all zeros where ``prev_y == NO_LABEL``."""
    given = prev_y != NO_LABEL
    return F.one_hot(prev_y.clamp(min=0), n_way).float() * given.unsqueeze(-1)


def labels_of_steps(labels_before: Tensor) -> Tensor:
    """``[B, T, n_way]`` one-hot labels one step late (:func:`encode_previous_labels`) -> each step's own label.

    Step ``t``'s label arrives with step ``t + 1``; the last step's is not given (a row of zeros).
    """
    return torch.cat([labels_before[:, 1:], torch.zeros_like(labels_before[:, :1])], dim=1)


def per_instance_accuracy(
    logits: Tensor, y: Tensor, instance: Tensor, max_instance: int = 10
) -> tuple[Tensor, Tensor]:
    """Accuracy by instance number.

    Args:
        logits: ``[B, T, N]`` logits, or ``[B, T]`` predicted labels.
        y: ``[B, T]`` true labels.
        instance: ``[B, T]`` 1-based instance number of ``y``'s class at each step.
        max_instance: report instances ``1..max_instance``.

    Returns:
        ``(accuracy [max_instance], count [max_instance])``: ``accuracy[i - 1]`` is the fraction of
        correct predictions over the steps showing the ``i``-th instance of their class (``nan``
        where ``count`` is 0); ``count`` as float64.
    """
    preds = logits.argmax(-1) if logits.dim() == 3 else logits
    if preds.shape != y.shape or instance.shape != y.shape:
        raise ValueError(
            f"logits [B, T, N] (or predictions [B, T]), y and instance must agree in [B, T], got "
            f"{list(logits.shape)}, {list(y.shape)}, {list(instance.shape)}"
        )
    correct = (preds == y).double().flatten()
    inst = instance.flatten()
    keep = (inst >= 1) & (inst <= max_instance)
    slot = inst[keep] - 1
    count = torch.zeros(max_instance, dtype=torch.float64, device=y.device).index_add_(0, slot, torch.ones_like(correct[keep]))
    hits = torch.zeros(max_instance, dtype=torch.float64, device=y.device).index_add_(0, slot, correct[keep])
    return hits / count, count  # 0 / 0 = nan where an instance never occurs


class OnlineMetaLearner(InjectedOptimizerModule):
    """Meta-train any stream learner on the online protocol.

    The loss is the cross-entropy of every step of every stream (Santoro et al. 2016). Training
    logs ``train/loss``, ``train/acc`` and ``train/acc_inst{i}``; validation and test log
    ``{stage}/acc_inst{i}`` for ``i`` in :data:`REPORTED_INSTANCES` and keep the per-stream values
    in :attr:`results` (mean and 95% CI via :meth:`summary`).

    Args:
        learner: a module with ``predict_stream`` and ``n_way`` (e.g. ``LSTMLearner``, ``MANN``).
        optimizer, lr_scheduler: injected as :class:`~rnnmeta.learners.MetaLearner` takes them
            (:class:`~rnnmeta.learners.base.InjectedOptimizerModule`); clip gradients with the
            Trainer's ``gradient_clip_val`` (Santoro et al. clip).
        max_instance: instances ``1..max_instance`` are measured.
    """

    def __init__(
        self,
        learner: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        max_instance: int = 10,
    ) -> None:
        super().__init__(optimizer, lr_scheduler)
        if not callable(getattr(learner, "predict_stream", None)):
            raise TypeError(f"{type(learner).__name__} has no predict_stream(x, prev_y); it cannot run the online protocol")
        if max_instance < 1:
            raise ValueError(f"max_instance must be >= 1, got {max_instance}")
        learner_hparams = getattr(learner, "hparams", {})
        readout = learner_hparams.get("readout_init", 0.0)
        if readout is None:  # the key-value initialisation's own scale
            readout = LABEL_READOUT_SCALE
        matching = bool(learner_hparams.get("matching_init"))
        if matching or (learner_hparams.get("key_value_init") and readout):
            rank_zero_warn(
                f"OnlineMetaLearner: {type(learner).__name__} was built with "
                f"{'matching_init=True' if matching else f'readout_init={readout}'}: its head starts reading back the label given at the same step, "
                "but in the online protocol that slot holds the previous step's label. LSTMLearner stayed at chance "
                "that way (22.5 % at the 2nd instance after 500 meta-iterations, 53.2 % with readout_init=0; "
                "docs/RECURRENT.md). Build the learner with readout_init=0 and without matching_init (MANN: "
                "key_value_init=False)."
            )
        self.save_hyperparameters(ignore=["learner", "optimizer", "lr_scheduler"])
        self.learner = learner
        self.n_way = int(learner.n_way)
        self.max_instance = max_instance
        self.results: dict[str, list[Tensor]] = {}

    def forward(self, x: Tensor, prev_y: Tensor) -> Tensor:
        return self.learner.predict_stream(x, prev_y)

    def _check(self, batch: OnlineStream) -> None:
        if batch.n_way != self.n_way:
            raise ValueError(f"the learner is {self.n_way}-way but the streams are {batch.n_way}-way")

    def training_step(self, batch: OnlineStream, batch_idx: int) -> Tensor:
        self._check(batch)
        logits = self(batch.x, batch.prev_y)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.y.flatten())
        acc, _ = per_instance_accuracy(logits.detach(), batch.y, batch.instance, self.max_instance)
        bs = batch.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/acc", (logits.argmax(-1) == batch.y).float().mean(), prog_bar=True, batch_size=bs)
        for i in REPORTED_INSTANCES:
            if i <= self.max_instance and torch.isfinite(acc[i - 1]):
                self.log(f"train/acc_inst{i}", acc[i - 1].float(), batch_size=bs)
        return loss

    def _eval_step(self, batch: OnlineStream, stage: str) -> None:
        self._check(batch)
        logits = self(batch.x, batch.prev_y)
        # one row per stream: its accuracy at each instance number
        rows = [per_instance_accuracy(logits[b : b + 1], batch.y[b : b + 1], batch.instance[b : b + 1],
                                      self.max_instance)[0] for b in range(batch.batch_size)]
        self.results.setdefault(stage, []).append(torch.stack(rows).cpu())

    def _eval_start(self, stage: str) -> None:
        self.results[stage] = []

    def _eval_end(self, stage: str) -> None:
        # every rank's streams, in stream order (rank r of W evaluates streams i % W == r)
        rows = self.results.get(stage) or []
        if rows:
            self.results[stage] = [gather_episode_rows(self, torch.cat(rows))]
        mean, _ = self.summary(stage)
        for i in REPORTED_INSTANCES:
            if i <= self.max_instance:
                self.log(f"{stage}/acc_inst{i}", float(mean[i - 1]))

    def summary(self, stage: str = "test") -> tuple[Tensor, Tensor]:
        """``(mean [max_instance], ci95 [max_instance])`` of per-stream accuracy at each instance number.

        ``nan`` for instance numbers no stream reached; the CI is ``1.96 * std / sqrt(n)`` over streams.
        """
        rows = self.results.get(stage) or []
        if not rows:
            raise RuntimeError(f"no {stage} results yet: run trainer.{'test' if stage == 'test' else 'validate'} first")
        values = torch.cat(rows)  # [n_streams, max_instance], nan where a stream lacks that instance
        present = torch.isfinite(values).sum(0).double()
        n = present.clamp(min=1)
        mean = torch.nansum(values, 0) / n
        var = torch.nansum((values - mean) ** 2, 0) / (n - 1).clamp(min=1)
        missing = torch.full_like(mean, float("nan"))
        return torch.where(present > 0, mean, missing), torch.where(present > 0, 1.96 * var.sqrt() / n.sqrt(), missing)


def format_table(rows: Sequence[tuple[str, Tensor, Tensor]], instances: Sequence[int] = REPORTED_INSTANCES) -> str:
    """A Markdown table of per-instance accuracy: one row per ``(name, mean, ci95)``, Santoro's MANN last."""
    head = "| learner | " + " | ".join(f"inst {i}" for i in instances) + " |"
    lines = [head, "|---" * (len(instances) + 1) + "|"]
    for name, mean, ci in rows:
        cells = [f"{100 * float(mean[i - 1]):.1f} +- {100 * float(ci[i - 1]):.1f}" for i in instances]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ref = [f"{100 * SANTORO_MANN[i]:.1f}" if i in SANTORO_MANN else "" for i in instances]
    lines.append("| MANN, Santoro et al. 2016 (100k episodes) | " + " | ".join(ref) + " |")
    return "\n".join(lines)
