""":class:`RunMonitor`: what a comparison records of one run, and the CPU or wall-clock budget.

It records every validation point at the step where it was measured (with the mean training loss
since the previous point), the training time on the process's CPU clock and on the wall clock
(training steps only: validation, checkpoints and logging are excluded), peak memory, and a
fingerprint of the test episodes. Its state travels in the checkpoint, so a resumed run counts
every step once.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from rnnmeta.process import resident_bytes

__all__ = ["RunMonitor"]


class RunMonitor(Callback):
    """Records a run's validation curve, training cost and test fingerprint; stops at a CPU or wall budget.

    Args:
        max_cpu_seconds: stop training once the training steps have used this much CPU time of
            this process (``time.process_time``: all its threads, so a budget means the same
            work on a busy machine).
        max_wall_seconds: stop training once the training steps have taken this long on the wall clock.
        sample_seconds: period of the resident-memory sampling thread.

    Attributes:
        curve: one dict per validation: ``step`` (meta-training steps done), ``value`` (the
            validation metric), ``train_loss`` (mean training loss of the steps since the previous
            point), ``train_cpu_seconds`` and ``train_wall_seconds`` (training time so far).
    """

    def __init__(
        self, max_cpu_seconds: Optional[float] = None, max_wall_seconds: Optional[float] = None, sample_seconds: float = 0.2
    ) -> None:
        self.max_cpu_seconds = max_cpu_seconds
        self.max_wall_seconds = max_wall_seconds
        self.sample_seconds = sample_seconds
        self.train_cpu_seconds = 0.0
        self.train_wall_seconds = 0.0
        self.train_batches = 0
        self.train_episodes = 0
        self.curve: list[dict[str, float]] = []
        self.peak_rss_bytes = 0
        self._loss_sum = 0.0
        self._loss_count = 0
        self._batch_cpu = 0.0
        self._batch_wall = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._test_hash = hashlib.sha256()
        self.test_episodes = 0

    # ------------------------------------------------------------------ memory
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

    # ------------------------------------------------------------------ training
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_memory_sampling()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_cpu = time.process_time()
        self._batch_wall = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.train_cpu_seconds += time.process_time() - self._batch_cpu
        self.train_wall_seconds += time.perf_counter() - self._batch_wall
        self.train_batches += 1
        self.train_episodes += batch.batch_size
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):
            self._loss_sum += float(loss.detach())
            self._loss_count += 1
        over_cpu = self.max_cpu_seconds is not None and self.train_cpu_seconds >= self.max_cpu_seconds
        over_wall = self.max_wall_seconds is not None and self.train_wall_seconds >= self.max_wall_seconds
        if over_cpu or over_wall:
            trainer.should_stop = True

    # ---------------------------------------------------------------- evaluation
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Read after the module's on_validation_epoch_end has computed the statistics of this
        # validation (callbacks' epoch-end hooks run before the module's).
        if trainer.sanity_checking:
            return
        stats = getattr(pl_module, "eval_stats", {}).get("val")
        if stats is None:
            return
        self.curve.append(
            {
                "step": float(trainer.global_step),
                "value": float(stats.mean),
                "train_loss": self._loss_sum / self._loss_count if self._loss_count else float("nan"),
                "train_cpu_seconds": self.train_cpu_seconds,
                "train_wall_seconds": self.train_wall_seconds,
            }
        )
        self._loss_sum, self._loss_count = 0.0, 0

    def on_test_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y):
            self._test_hash.update(t.detach().cpu().contiguous().numpy().tobytes())
        self.test_episodes += batch.batch_size

    @property
    def test_fingerprint(self) -> str:
        """The first 16 hex digits of the SHA-256 of every test episode's tensors, in order."""
        return self._test_hash.hexdigest()[:16]

    # ------------------------------------------------------------------ state
    #: checkpoint key -> attribute: what a resumed run needs to count every step once
    _STATE = {key: key for key in ("train_cpu_seconds", "train_wall_seconds", "train_batches", "train_episodes",
                                   "curve", "peak_rss_bytes")} | {"loss_sum": "_loss_sum", "loss_count": "_loss_count"}

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, attr) for key, attr in self._STATE.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, attr in self._STATE.items():
            setattr(self, attr, list(state[key]) if key == "curve" else state.get(key, getattr(self, attr)))
