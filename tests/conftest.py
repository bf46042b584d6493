"""Shared fixtures: an isolated environment for every test, and the real Omniglot data.

* Every test runs with ``WANDB_MODE=offline`` and W&B's folders (``WANDB_DIR``,
  ``WANDB_CACHE_DIR``, ``WANDB_CONFIG_DIR``) inside a temporary folder of the session, and
  ``RNNMETA_CACHE`` pointing at one session-wide cache folder (shared by the pytest-xdist workers
  of a run), so the Omniglot cache is decoded once per test session and nothing is written under ``~``. Set ``RNNMETA_TEST_CACHE`` to a
  folder to keep that cache between sessions.
* Run by several pytest-xdist workers (``scripts/test.sh`` does), each worker takes its share of the
  cores as torch's intra-op threads and as ``OMP_NUM_THREADS`` for the processes its tests start.
* ``one_thread``: torch on one intra-op thread for the test, the caller's count restored after.
* ``omniglot_root``: ``<repo>/../shared/data/omniglot``; tests that need it skip (with how to
  provide the data) when it is absent, and fail instead when ``CI=true``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT_DIR = REPO.parent / "shared" / "data" / "omniglot"
OMNIGLOT_FILES = ("images_background.zip", "images_evaluation.zip")


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's ``RNNMETA_CACHE`` (or ``$RNNMETA_TEST_CACHE`` to reuse a cache across sessions)."""
    keep = os.environ.get("RNNMETA_TEST_CACHE")
    if keep:
        path = Path(keep).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # one cache for all the run's workers (their base temp folders share a parent): the first
        # to need Omniglot decodes it (about 25 CPU-seconds) while the others wait on its lock
        path = tmp_path_factory.getbasetemp().parent / "rnnmeta_cache"
        path.mkdir(exist_ok=True)
        return path
    return tmp_path_factory.mktemp("rnnmeta_cache")


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, session_cache_dir: Path) -> Iterator[None]:
    """W&B offline with its folders in a temp dir; ``RNNMETA_CACHE`` at the session cache."""
    wandb_root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            folder = wandb_root / name.lower()
            folder.mkdir()
            mp.setenv(name, str(folder))
        mp.setenv("RNNMETA_CACHE", str(session_cache_dir))
        threads = _threads_per_worker()
        if threads is None:
            yield
            return
        # several test processes (pytest-xdist) share the cores: each takes its share of intra-op
        # threads, and so do the processes its tests start (OMP_NUM_THREADS)
        import torch

        mp.setenv("OMP_NUM_THREADS", str(threads))
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        yield
        torch.set_num_threads(before)


def _threads_per_worker() -> int | None:
    """Intra-op threads for one of several pytest-xdist workers (the cores split evenly, at least 1); None when alone."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


@pytest.fixture(autouse=True)
def _no_shared_wandb_service() -> Iterator[None]:
    """Each test's subprocesses start their own W&B service.

    ``wandb.init`` in this process records its service in ``WANDB_SERVICE``; a child process that
    inherits it connects to that service, whose files then land in another test's folders.
    """
    os.environ.pop("WANDB_SERVICE", None)
    yield
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture(autouse=True)
def _no_debug_mode_carried_over() -> Iterator[None]:
    """``rnnmeta ... --debug`` sets ``RNNMETA_DEBUG=1`` in the process (for DDP ranks); it must not reach the next test."""
    os.environ.pop("RNNMETA_DEBUG", None)
    yield
    os.environ.pop("RNNMETA_DEBUG", None)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for the test (on a shared CPU spinning threads cost CPU time and buy nothing)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _omniglot_missing_message() -> str:
    return (
        f"Omniglot data not found at {OMNIGLOT_DIR}: put images_background.zip and images_evaluation.zip "
        "(https://github.com/brendenlake/omniglot/tree/master/python) or their extracted folders there, "
        "or fetch them once with rnnmeta.data.Omniglot(root=..., download=True)"
    )


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """``<repo>/../shared/data/omniglot``; skip when absent (fail when ``CI=true``)."""
    present = all((OMNIGLOT_DIR / f).is_file() or (OMNIGLOT_DIR / f[: -len(".zip")]).is_dir() for f in OMNIGLOT_FILES)
    if not present:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(_omniglot_missing_message())
        pytest.skip(_omniglot_missing_message())
    return OMNIGLOT_DIR


@pytest.fixture(scope="session")
def omniglot(omniglot_root: Path, session_cache_dir: Path):
    """The Vinyals-split Omniglot (28x28, rotations), its cache built once per session."""
    from rnnmeta.data import Omniglot

    return Omniglot(root=str(omniglot_root), cache_dir=str(session_cache_dir))
