"""Lightning callbacks of rnnmeta: :class:`RandomStateCheckpoint` makes a resumed run exact;
:class:`SteadyProgressBar` keeps the progress bar's cost out of small models' steps, and
:class:`NullProfiler` the cost of Lightning's default profiler.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import random
import sys
import time
import warnings
from typing import Any, NamedTuple, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.profilers import PassThroughProfiler
from torch import Tensor

__all__ = ["NullProfiler", "RandomStateCheckpoint", "SteadyProgressBar", "capture_random_state", "restore_random_state"]

RandomState = dict[str, Any]


_MT19937_KEY_BYTES = 4 * 624  # numpy's mt19937_state struct: uint32 key[624], then int pos
_MT19937_STATE_BYTES = _MT19937_KEY_BYTES + 4


class _NumpyStateBytes:
    """The raw bytes of ``np.random``'s MT19937 key and position: a fingerprint taken in a microsecond.

    numpy's ``get_state`` and ``set_state`` copy the 624-word key one word at a time (about 0.1 ms
    each on the development machine: a quarter of rnnmeta's per-step cost on the sinusoid models,
    docs/PERFORMANCE.md). The bytes are read at ``bit_generator.ctypes.state_address``; the layout is
    checked against ``np.random.get_state()`` whenever the global bit generator is a new object, and
    where it does not match (or the generator is not MT19937) :meth:`read` returns ``None`` and the
    callers take numpy's own path.
    """

    def __init__(self) -> None:
        self._generator: Any = None
        self._address: Optional[int] = None

    def read(self) -> Optional[bytes]:
        generator = getattr(np.random.mtrand._rand, "_bit_generator", None)
        if generator is not self._generator:  # first call, or np.random.set_bit_generator replaced it
            self._generator, self._address = generator, self._checked_address(generator)
        return None if self._address is None else ctypes.string_at(self._address, _MT19937_STATE_BYTES)

    @staticmethod
    def _checked_address(generator: Any) -> Optional[int]:
        address = getattr(getattr(generator, "ctypes", None), "state_address", None)
        if not isinstance(generator, np.random.MT19937) or not isinstance(address, int):
            return None
        legacy = np.random.get_state()
        raw = ctypes.string_at(address, _MT19937_STATE_BYTES)
        key = np.frombuffer(raw[:_MT19937_KEY_BYTES], dtype=np.uint32)
        position = int.from_bytes(raw[_MT19937_KEY_BYTES:], sys.byteorder, signed=True)
        return address if np.array_equal(key, legacy[1]) and position == legacy[2] else None


_NUMPY_STATE_BYTES = _NumpyStateBytes()


class _RawState(NamedTuple):
    """The generators' states as their libraries return them (cheap to take and set: once per training step).

    ``numpy_bytes`` is the fingerprint of ``numpy`` (:class:`_NumpyStateBytes`; ``None`` where it
    cannot be read). While the generator's bytes equal it and no Gaussian is cached in ``numpy``
    (``has_gauss`` 0), the generator is in the state ``numpy``: every draw that changes the legacy
    state advances the key position, except handing out a cached Gaussian, which needs one cached.
    The one thing this does not see is another ``np.random.set_state`` to a state with the same key
    and position and a cached Gaussian, taken while that Gaussian was pending.
    """

    torch: Tensor
    cuda: list[Tensor]
    numpy: tuple
    python: tuple
    numpy_bytes: Optional[bytes] = None


def _numpy_unchanged(raw: _RawState, now: Optional[bytes]) -> bool:
    """Whether ``np.random`` is still in the state ``raw.numpy`` (its bytes are ``now``; see :class:`_RawState`)."""
    return now is not None and now == raw.numpy_bytes and raw.numpy[3] == 0


def _capture_raw(previous: Optional[_RawState] = None) -> _RawState:
    """The global states now; numpy's is taken from ``previous`` where nothing drew from it since."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    numpy_bytes = _NUMPY_STATE_BYTES.read()
    if previous is not None and _numpy_unchanged(previous, numpy_bytes):
        numpy_state = previous.numpy
    else:
        numpy_state = np.random.get_state()
    return _RawState(torch.get_rng_state(), list(cuda), numpy_state, random.getstate(), numpy_bytes)


def _restore_raw(raw: _RawState) -> None:
    torch.set_rng_state(raw.torch)
    if raw.cuda and torch.cuda.is_available():
        for device in range(min(len(raw.cuda), torch.cuda.device_count())):
            torch.cuda.set_rng_state(raw.cuda[device], device)
    if not _numpy_unchanged(raw, _NUMPY_STATE_BYTES.read()):
        np.random.set_state(raw.numpy)
    random.setstate(raw.python)


def _to_plain(raw: _RawState) -> RandomState:
    name, key, pos, has_gauss, cached = raw.numpy
    if name != "MT19937":  # pragma: no cover - numpy's legacy global state is always MT19937
        raise RuntimeError(f"unexpected numpy global generator {name!r}; expected 'MT19937'")
    version, internal, gauss_next = raw.python
    return {
        "torch": raw.torch.clone(),
        "torch_cuda": [s.clone() for s in raw.cuda],
        "numpy": {
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss_next": gauss_next},
    }


def _from_plain(state: RandomState) -> _RawState:
    missing = [k for k in ("torch", "numpy", "python") if k not in state]
    if missing:
        raise ValueError(f"random state is missing {missing}; expected the keys written by capture_random_state")
    npy, py = state["numpy"], state["python"]
    key = npy["key"].numpy() if isinstance(npy["key"], Tensor) else np.asarray(npy["key"])
    return _RawState(
        torch=state["torch"],
        cuda=list(state.get("torch_cuda") or []),
        numpy=("MT19937", key.astype(np.uint32), int(npy["pos"]), int(npy["has_gauss"]), float(npy["cached_gaussian"])),
        python=(int(py["version"]), tuple(int(v) for v in py["internal"]), py["gauss_next"]),
    )


def capture_random_state() -> RandomState:
    """The global random states of this process as plain tensors, lists and numbers.

    Keys: ``"torch"`` (uint8 tensor), ``"torch_cuda"`` (list of uint8 tensors, one per visible
    device; empty when CUDA is not initialised), ``"numpy"`` (the MT19937 state of
    ``np.random``: ``key`` as an int64 tensor, ``pos``, ``has_gauss``, ``cached_gaussian``) and
    ``"python"`` (``random.getstate()`` as ``version``, ``internal`` list of ints, ``gauss_next``).
    Nothing in it needs pickled classes, so checkpoints holding it load with
    ``torch.load(weights_only=True)``.
    """
    return _to_plain(_capture_raw())


def restore_random_state(state: RandomState) -> None:
    """Set the global random states of this process to ``state`` (from :func:`capture_random_state`).

    CUDA states are restored for the devices present in both the state and this process (a state
    saved on a CPU-only machine leaves CUDA's generators alone).

    Raises:
        ValueError: ``state`` lacks one of the keys ``torch``, ``numpy``, ``python``.
    """
    _restore_raw(_from_plain(state))


def _next_log_step(trainer: "pl.Trainer") -> Optional[int]:
    """The loggers' step the next training batch will see, called at the end of a training batch.

    Lightning advances ``fit_loop.epoch_loop._batches_that_stepped`` right after
    ``on_train_batch_end`` unless the batch only accumulates gradients.
    """
    epoch_loop = trainer.fit_loop.epoch_loop
    count = getattr(epoch_loop, "_batches_that_stepped", None)
    should_accumulate = getattr(epoch_loop, "_should_accumulate", None)
    if not isinstance(count, int) or should_accumulate is None:
        return None  # another Lightning version: leave the loggers' step to Lightning
    return count + (0 if should_accumulate() else 1)


class RandomStateCheckpoint(Callback):
    """Save the global random generators in every checkpoint and restore them on resume.

    A checkpoint already holds the weights, the optimiser, the loop position and the position of
    the task stream; this callback adds what a learner may still draw at random in a training step
    (dropout, noise, a shuffle): the states of torch's CPU and CUDA generators, numpy's global
    generator and Python's ``random`` (:func:`capture_random_state`) and the rank that wrote them,
    under the key ``"RandomStateCheckpoint"``, so that a run resumed with ``--ckpt_path`` ends with
    the same weights and metrics as one never stopped.

    The training steps draw from one stream that nothing else touches: the states are recorded at
    the end of every training batch and set back at the start of the next one, so validation, the
    sanity check, data-loader iterators and checkpointing neither advance nor depend on it, and a
    checkpoint holds the states after its last completed training batch. On resume
    (:meth:`load_state_dict`, before ``on_fit_start``) they are kept pending and set at the first
    ``on_train_batch_start``. The callback also records the loggers' step of the next training
    batch, which Lightning restores one too high from a checkpoint written when validation ends an
    epoch, so the resumed run logs every metric at the same step.

    With several processes (DDP) the checkpoint holds rank 0's states; the other ranks keep those
    ``seed_everything`` gave them, with a warning. The ``rnnmeta`` command and ``rnnmeta compare``
    add this callback unless the configured callbacks hold one (Lightning refuses two).

    Example::

        trainer = pl.Trainer(max_steps=1000, callbacks=[RandomStateCheckpoint(), ModelCheckpoint(save_last=True)])
        trainer.fit(learner, datamodule=data, ckpt_path="runs/.../last.ckpt")
    """

    def __init__(self) -> None:
        # states at the end of the last completed training batch (or loaded from a checkpoint),
        # set back at the start of the next training batch
        self._after_batch: Optional[_RawState] = None
        self._rank = 0
        self._log_step: Optional[int] = None  # the loggers' step of the next training batch
        self._pending_log_step: Optional[int] = None

    # ------------------------------------------------------------------ lifecycle
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._rank = int(trainer.global_rank)
        if stage == "fit":
            self._after_batch = None
            self._log_step = self._pending_log_step = None

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any, batch_idx: int) -> None:
        if self._after_batch is not None:
            _restore_raw(self._after_batch)
        if self._pending_log_step is not None:
            epoch_loop = trainer.fit_loop.epoch_loop
            if isinstance(getattr(epoch_loop, "_batches_that_stepped", None), int):
                epoch_loop._batches_that_stepped = self._pending_log_step
            self._pending_log_step = None

    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._after_batch = _capture_raw(self._after_batch)
        self._log_step = _next_log_step(trainer)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """``{"rank": r, "random_state": ..., "log_step": n}``: the training stream's states (see the class docstring)."""
        state = _to_plain(self._after_batch if self._after_batch is not None else _capture_raw())
        log_step = self._pending_log_step if self._pending_log_step is not None else self._log_step
        out: dict[str, Any] = {"rank": self._rank, "random_state": state}
        if log_step is not None:
            out["log_step"] = log_step
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep the saved states; they are set right before the first resumed training step."""
        if "random_state" not in state_dict:
            raise ValueError(
                f"RandomStateCheckpoint state must hold 'random_state', got keys {sorted(state_dict)}; "
                "the checkpoint was not written by this callback"
            )
        log_step = state_dict.get("log_step")
        self._pending_log_step = None if log_step is None else int(log_step)  # the same on every rank
        saved_rank = int(state_dict.get("rank", 0))
        if saved_rank != self._rank:
            warnings.warn(
                f"the checkpoint holds the random states of rank {saved_rank}; rank {self._rank} keeps its seeded "
                "states, so its random draws after the resume differ from an uninterrupted run",
                stacklevel=2,
            )
            return
        self._after_batch = _from_plain(state_dict["random_state"])


class SteadyProgressBar(TQDMProgressBar):
    """Lightning's TQDM progress bar, redrawn at most every ``min_interval`` seconds during training.

    Lightning's bar redraws after every training batch, about a tenth of a step of the small models
    of the main job (sinusoid MLPs; docs/PERFORMANCE.md). The last batch of an epoch is always drawn.
    ``rnnmeta fit/test`` and ``rnnmeta compare`` use this bar unless the config names one of its own.

    Args:
        min_interval: seconds between two redraws of the training bar (>= 0; 0 is Lightning's bar).
        refresh_rate, process_position, leave: as :class:`~pytorch_lightning.callbacks.TQDMProgressBar`.
    """

    def __init__(self, min_interval: float = 0.5, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        if not (isinstance(min_interval, (int, float)) and min_interval >= 0):
            raise ValueError(f"SteadyProgressBar: min_interval must be a number of seconds >= 0, got {min_interval!r}")
        self.min_interval = float(min_interval)
        self._last_draw = -math.inf
        self._undrawn: Optional[int] = None  # batches done since the last draw

    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        self._undrawn = batch_idx + 1
        if now - self._last_draw >= self.min_interval or batch_idx + 1 == self.total_train_batches:
            self._last_draw, self._undrawn = now, None
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # the epoch's last batches (or the last before max_steps) may not have been drawn: draw them now
        bar = self.train_progress_bar
        if self._undrawn is not None and not bar.disable:
            bar.n = self._undrawn
            bar.refresh()
        self._undrawn = None
        super().on_train_epoch_end(trainer, pl_module)


class NullProfiler(PassThroughProfiler):
    """Lightning's default profiler (it records nothing), without a new context manager per action.

    The Trainer wraps each of the 80-odd hook and strategy calls of a training step in
    ``profiler.profile(name)``; :class:`~pytorch_lightning.profilers.PassThroughProfiler` builds a
    generator-based context manager for each. This one hands back one shared ``contextlib.nullcontext``
    (with ``InjectedOptimizerModule``'s ``__setattr__``, it took Lightning's per-step cost on a
    one-parameter module from 0.58 to 0.44 ms; docs/PERFORMANCE.md). ``rnnmeta fit/test``,
    ``rnnmeta compare`` and the meta-RL comparison use it unless ``trainer.profiler`` names a profiler.
    """

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return self._NOTHING
