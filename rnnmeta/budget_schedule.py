""":class:`BudgetCosineLR`: a learning rate that decays over the training budget, whatever its unit.

A torch schedule counts steps, so it needs the number of steps in advance. A comparison with a
CPU-minute budget does not know it: a learner takes as many steps as the budget buys on this
machine. This callback reads the fraction of the budget already spent (steps, CPU-seconds or
wall-clock seconds, whichever is furthest along) before every meta-training step and sets every
parameter group's learning rate to a cosine of it (Loshchilov & Hutter 2017, SGDR, without restarts):

    lr(p) = lr0 * (f + (1 - f) * (1 + cos(pi * p)) / 2),   p = spent / budget in [0, 1]

where ``lr0`` is the optimiser's configured rate and ``f`` is ``final_factor``. With a step budget the
schedule is ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=max_steps, eta_min=f * lr0)``; with a
CPU budget it ends when the budget ends on any machine.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

__all__ = ["BudgetCosineLR", "budget_fraction"]

#: key under which each parameter group keeps its configured rate (travels in the optimiser's checkpoint)
BASE_LR_KEY = "budget_base_lr"


def budget_fraction(trainer: "pl.Trainer") -> Optional[float]:
    """The fraction in [0, 1] of the training budget spent so far; None if the run has no budget.

    The budget is ``trainer.max_steps`` (when > 0) and the CPU or wall-clock budget of a
    :class:`~rnnmeta.compare.RunMonitor` among the trainer's callbacks; the largest fraction counts,
    since training stops at the first budget reached.
    """
    from rnnmeta.compare.monitor import RunMonitor

    fractions = []
    if trainer.max_steps is not None and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    for callback in trainer.callbacks:
        if isinstance(callback, RunMonitor):
            if callback.max_cpu_seconds is not None:
                fractions.append(callback.train_cpu_seconds / callback.max_cpu_seconds)
            if callback.max_wall_seconds is not None:
                fractions.append(callback.train_wall_seconds / callback.max_wall_seconds)
    return min(1.0, max(fractions)) if fractions else None


class BudgetCosineLR(Callback):
    """Cosine decay of every optimiser's learning rate over the run's budget (steps, CPU or wall-clock).

    ``rnnmeta compare`` adds it to a learner's runs with ``lr_decay_to: f`` in the learner's entry;
    with ``rnnmeta fit`` it needs ``trainer.max_steps``::

        trainer:
          max_steps: 5000
          callbacks: [{class_path: rnnmeta.budget_schedule.BudgetCosineLR, init_args: {final_factor: 0.1}}]

    It replaces a learner's ``lr_scheduler`` and refuses to run beside one. A resumed run continues
    the schedule: the configured rate is stored in the optimiser's state and the spent budget in the
    step counter and the comparison's monitor.

    Args:
        final_factor: the learning rate at the end of the budget, as a fraction of the configured one
            (in [0, 1]; 0 decays to zero, 1 keeps the rate constant).
    """

    def __init__(self, final_factor: float = 0.1) -> None:
        if isinstance(final_factor, bool) or not isinstance(final_factor, (int, float)) or not 0.0 <= final_factor <= 1.0:
            raise ValueError(f"BudgetCosineLR: final_factor must be a number in [0, 1], got {final_factor!r}")
        self.final_factor = float(final_factor)

    def factor(self, fraction: float) -> float:
        """The multiplier of the configured rate once ``fraction`` of the budget is spent."""
        fraction = min(1.0, max(0.0, fraction))
        return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * fraction))

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.lr_scheduler_configs:
            raise ValueError(
                f"BudgetCosineLR sets the learning rate itself, but {type(pl_module).__name__} also has an "
                "lr_scheduler: remove one of the two"
            )
        if budget_fraction(trainer) is None:
            raise ValueError(
                "BudgetCosineLR needs a budget to decay over: set trainer.max_steps > 0, or train through "
                "rnnmeta compare with max_steps, max_cpu_minutes or max_wall_minutes"
            )

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any, batch_idx: int) -> None:
        factor = self.factor(budget_fraction(trainer) or 0.0)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group.setdefault(BASE_LR_KEY, group["lr"])
                group["lr"] = group[BASE_LR_KEY] * factor
