"""The two abstractions every dataset implements.

* :class:`TaskSource`: one split (train, val or test) that draws a batch of tasks as an
  :class:`~rnnmeta.episode.Episode` from a :class:`torch.Generator`. Sampling is a pure function
  of the generator's state, so the caller decides the seeding (see
  :class:`~rnnmeta.data.module.EpisodicDataModule`).
* :class:`FewShotDataset`: a dataset with three disjoint splits; what the data module is
  configured with (``dataset: {class_path: rnnmeta.data.Omniglot, init_args: {...}}``).
"""

from __future__ import annotations

import abc
from pathlib import Path

import torch

from rnnmeta.data.archive import default_cache_dir
from rnnmeta.episode import CLASSIFICATION, Episode

SPLITS = ("train", "val", "test")

__all__ = ["SPLITS", "FewShotDataset", "TaskSource", "check_split_name"]


def check_split_name(name: str) -> str:
    """Return ``name`` if it is ``"train"``, ``"val"`` or ``"test"``; else raise ``ValueError`` naming it."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
    return name


class TaskSource(abc.ABC):
    """Draws batches of tasks from one split.

    Attributes:
        kind: ``"classification"`` or ``"regression"``.
    """

    kind: str = CLASSIFICATION

    @abc.abstractmethod
    def sample(self, generator: torch.Generator, batch_size: int, n_way: int, k_shot: int, q_queries: int) -> Episode:
        """Draw ``batch_size`` tasks.

        Args:
            generator: the only source of randomness; the same generator state gives the same episode.
            batch_size: tasks ``B``.
            n_way: classes per task (ignored by regression sources).
            k_shot: support examples per class (classification) or support points (regression).
            q_queries: query examples per class (classification, ``M = N * Q``) or query points (regression).
        """


class FewShotDataset(abc.ABC):
    """A dataset of tasks with disjoint ``train``/``val``/``test`` splits.

    Attributes:
        kind: ``"classification"`` or ``"regression"``.
        x_shape: shape of one input, e.g. ``(1, 28, 28)`` or ``(1,)``.
    """

    kind: str = CLASSIFICATION
    x_shape: tuple[int, ...] = ()

    @abc.abstractmethod
    def split(self, name: str) -> TaskSource:
        """The :class:`TaskSource` of split ``name`` (``"train"``, ``"val"`` or ``"test"``).

        Raises:
            ValueError: ``name`` is not one of the three.
        """

    @property
    def cache_dir(self) -> Path:
        """Folder of the decoded cache: ``cache_dir`` if given, else env ``RNNMETA_CACHE`` or ``~/.cache/rnnmeta``."""
        cache_dir = getattr(self, "_cache_dir", None)
        return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()

    def prepare(self) -> None:
        """Download and build caches (called once, on one process, by the data module's ``prepare_data``).

        The default does nothing; file-backed datasets override it.
        """

