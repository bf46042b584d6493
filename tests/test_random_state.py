"""RandomStateCheckpoint keeps numpy's global stream exact while it skips numpy's slow state copy.

Training steps must draw the numbers of an uninterrupted stream whatever runs between them; the
callback takes numpy's legacy state only when the generator's key bytes moved or a Gaussian is
cached (:class:`rnnmeta.callbacks._RawState`). Each case runs with the fingerprint and without it
(numpy's own ``get_state``/``set_state`` every step).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest

from rnnmeta import callbacks
from rnnmeta.callbacks import RandomStateCheckpoint

TRAINER = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=None))  # no loop position to record
STEPS = 4


@pytest.fixture(autouse=True)
def numpy_global_generator():
    """Give the test numpy's global bit generator back as it found it (one case replaces it)."""
    generator, state = np.random.get_bit_generator(), np.random.get_state()
    yield
    np.random.set_bit_generator(generator)
    np.random.set_state(state)


def training_draws() -> list[float]:
    """What a training step draws: one legacy Gaussian, so the other of its pair stays cached after it."""
    return [float(np.random.uniform()), float(np.random.standard_normal())]


BETWEEN_STEPS: dict[str, Callable[[], object]] = {
    "nothing": lambda: None,
    "a uniform draw": lambda: np.random.uniform(),
    "the cached Gaussian only (the key does not move)": lambda: np.random.standard_normal(),
    "a reseed": lambda: np.random.seed(123),
    "a new global bit generator": lambda: np.random.set_bit_generator(np.random.MT19937(1)),
}


def train(between: Callable[[], object], draws: Callable[[], list[float]] = training_draws) -> list[list[float]]:
    callback, got = RandomStateCheckpoint(), []
    for step in range(STEPS):
        callback.on_train_batch_start(TRAINER, None, None, step)
        got.append(draws())
        callback.on_train_batch_end(TRAINER, None, None, None, step)
        between()
    return got


@pytest.mark.parametrize("fingerprint", [True, False], ids=["fingerprint", "numpy-state-only"])
@pytest.mark.parametrize("between", BETWEEN_STEPS)
def test_training_draws_are_those_of_an_uninterrupted_stream(between, fingerprint, monkeypatch):
    if not fingerprint:
        monkeypatch.setattr(callbacks._NUMPY_STATE_BYTES, "read", lambda: None)
    np.random.seed(7)
    expected = [training_draws() for _ in range(STEPS)]
    np.random.seed(7)
    assert train(BETWEEN_STEPS[between]) == expected


def test_steps_that_leave_numpy_alone_do_not_copy_its_state(monkeypatch):
    callbacks._NUMPY_STATE_BYTES.read()  # check the layout of this generator before counting
    calls = {"get_state": 0, "set_state": 0}
    for name in calls:
        original = getattr(np.random, name)

        def counted(*args, _name=name, _original=original):
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(np.random, name, counted)
    np.random.seed(7)
    np.random.uniform()  # no Gaussian cached
    train(between=lambda: None, draws=lambda: [])
    assert calls == {"get_state": 1, "set_state": 0}  # the first capture only
    calls.update(get_state=0, set_state=0)
    train(between=lambda: np.random.uniform(), draws=lambda: [])
    # every step sets back what ran between; what it captures after that is the state it set
    assert calls == {"get_state": 1, "set_state": STEPS - 1}


def test_fingerprint_is_the_generators_key_and_position():
    np.random.seed(11)
    np.random.uniform(size=5)
    raw = callbacks._NUMPY_STATE_BYTES.read()
    _, key, position, _, _ = np.random.get_state()
    assert raw is not None and len(raw) == 4 * 624 + 4
    assert np.array_equal(np.frombuffer(raw[: 4 * 624], dtype=np.uint32), key)
    assert int.from_bytes(raw[4 * 624 :], "little" if np.little_endian else "big", signed=True) == position
    np.random.uniform()
    assert callbacks._NUMPY_STATE_BYTES.read() != raw
