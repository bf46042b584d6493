"""N-way K-shot Q-query sampling by tensor indexing, and the seeding that makes it reproducible.

A split is one tensor of images ``[n_images, C, H, W]`` (uint8) in which class ``c`` occupies
rows ``offsets[c] .. offsets[c] + counts[c] - 1``; :func:`sample_episode_index` draws a batch of
tasks without a Python loop over tasks or images (the steps are listed in docs/DATA.md).
:func:`derive_seed` maps ``(seed, split, *indices)`` to a generator seed through
:class:`numpy.random.SeedSequence`, so a batch or an episode is a pure function of those values.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from rnnmeta.data.base import TaskSource
from rnnmeta.episode import CLASSIFICATION, Episode

__all__ = [
    "ClassIndexSource",
    "EpisodeIndex",
    "check_count",
    "derive_seed",
    "make_generator",
    "sample_episode_index",
    "select_classes",
]


def derive_seed(seed: int, split: str, *indices: int) -> int:
    """A 64-bit seed that is a pure function of ``(seed, split, *indices)``.

    Different tuples give statistically independent streams (``numpy.random.SeedSequence``
    hashing), e.g. ``derive_seed(0, "train", rank, batch)`` or ``derive_seed(0, "test", episode)``.
    """
    if seed < 0 or any(i < 0 for i in indices):
        raise ValueError(f"derive_seed needs non-negative integers, got seed={seed}, indices={indices}")
    entropy = [int(seed), zlib.crc32(split.encode("utf-8")), len(indices), *map(int, indices)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def make_generator(seed: int, split: str, *indices: int) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with :func:`derive_seed`."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, split, *indices))
    return generator


class EpisodeIndex(NamedTuple):
    """Which examples make up a batch of tasks (all tensors int64).

    Attributes:
        classes: ``[B, N]``; label ``j`` of task ``b`` is class ``classes[b, j]`` of the split.
        support_class, support_slot, support_y: ``[B, N*K]`` class, example slot within the class, label.
        query_class, query_slot, query_y: ``[B, N*Q]`` the same for queries.
    """

    classes: Tensor
    support_class: Tensor
    support_slot: Tensor
    support_y: Tensor
    query_class: Tensor
    query_slot: Tensor
    query_y: Tensor


def check_count(name: str, value: int, least: int = 1) -> int:
    """``value`` if it is an ``int`` (not a bool) >= ``least`` (1 or 0), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a {'positive' if least else 'non-negative'} integer, got {value!r}")
    return value


def sample_episode_index(
    counts: Tensor,
    generator: torch.Generator,
    batch_size: int,
    n_way: int,
    k_shot: int,
    q_queries: int,
    split_name: str = "",
    class_names: Optional[Sequence[str]] = None,
) -> EpisodeIndex:
    """Choose classes, examples, labels and order for ``batch_size`` tasks (vectorised; see docs/DATA.md).

    Args:
        counts: ``[n_classes]`` examples per class.
        generator: source of randomness.
        batch_size, n_way, k_shot, q_queries: ``B``, ``N``, ``K``, ``Q`` (``Q`` may be 0).
        split_name, class_names: only used in error messages.

    Raises:
        ValueError: ``n_way`` exceeds the number of classes, or ``k_shot + q_queries`` exceeds the
            images of the smallest class (the message names the values).
    """
    for name, value in (("batch_size", batch_size), ("n_way", n_way), ("k_shot", k_shot)):
        check_count(name, value)
    check_count("q_queries", q_queries, 0)
    where = f" of split {split_name!r}" if split_name else ""
    n_classes = int(counts.numel())
    if n_way > n_classes:
        raise ValueError(f"n_way={n_way} exceeds the {n_classes} classes{where}")
    per_task = k_shot + q_queries
    smallest = int(counts.min())
    if per_task > smallest:
        which = int(counts.argmin())
        name = f" ({class_names[which]})" if class_names is not None else f" (class {which})"
        raise ValueError(
            f"k_shot + q_queries = {k_shot} + {q_queries} = {per_task} exceeds the {smallest} images "
            f"of the smallest class{name}{where}"
        )
    B, N, K, Q = batch_size, n_way, k_shot, q_queries

    # 1. N distinct classes per task, in random order (label j <-> classes[:, j])
    classes = torch.rand(B, n_classes, generator=generator).topk(N, dim=1, largest=False).indices

    # 2. K + Q distinct examples per chosen class; slots beyond a class's count never win
    max_count = int(counts.max())
    keys = torch.rand(B, N, max_count, generator=generator)
    if smallest != max_count:
        keys.masked_fill_(torch.arange(max_count) >= counts[classes][..., None], 2.0)
    slots = keys.topk(per_task, dim=2, largest=False).indices  # [B, N, K+Q]

    labels = torch.arange(N).view(1, N, 1)

    def flat(part: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        cls = classes[:, :, None].expand(B, N, n).reshape(B, N * n)
        slot = part.reshape(B, N * n)
        y = labels.expand(B, N, n).reshape(B, N * n)
        # 3. shuffle within each task so that labels do not come in blocks
        perm = torch.rand(B, N * n, generator=generator).argsort(dim=1)
        return cls.gather(1, perm), slot.gather(1, perm), y.gather(1, perm)

    s_cls, s_slot, s_y = flat(slots[..., :K], K)
    q_cls, q_slot, q_y = flat(slots[..., K:], Q)
    return EpisodeIndex(classes, s_cls, s_slot, s_y, q_cls, q_slot, q_y)


def select_classes(images: Tensor, counts: Tensor, classes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """The rows of ``classes`` (in that order) of ``images`` grouped by class, and their ``counts``.

    ``images`` holds ``counts[c]`` rows of class ``c`` after those of classes ``0..c-1`` (the
    layout of :class:`ClassIndexSource`); the rows returned are a new, contiguous tensor in that layout.
    """
    offsets = torch.cumsum(counts, 0) - counts
    rows = torch.cat([torch.arange(int(offsets[i]), int(offsets[i] + counts[i])) for i in classes])
    return images[rows], counts[classes]


class ClassIndexSource(TaskSource):
    """A classification split held as one image tensor plus a class -> rows index.

    Episodes carry float32 images in ``[0, 1]`` (uint8 storage is divided by 255) and int64
    labels; see the module docstring for how a batch is drawn.

    Args:
        images: ``[n_images, *x_shape]``, uint8 (or float already in ``[0, 1]``), rows grouped by class.
        counts: ``[n_classes]`` images per class; class ``c`` occupies the ``counts[c]`` rows after
            those of classes ``0..c-1``.
        class_names: one name per class (used in error messages and by tests).
        name: the split's name, for error messages.
    """

    kind = CLASSIFICATION

    def __init__(self, images: Tensor, counts: Tensor, class_names: Optional[Sequence[str]] = None, name: str = "") -> None:
        counts = torch.as_tensor(counts, dtype=torch.int64)
        if counts.dim() != 1 or counts.numel() == 0:
            raise ValueError(f"counts must be a non-empty 1-d tensor, got shape {tuple(counts.shape)}")
        if int(counts.min()) < 1:
            raise ValueError(f"every class needs at least one image; class {int(counts.argmin())} has {int(counts.min())}")
        if int(counts.sum()) != images.shape[0]:
            raise ValueError(f"counts sum to {int(counts.sum())} but images has {images.shape[0]} rows")
        if class_names is not None and len(class_names) != counts.numel():
            raise ValueError(f"{len(class_names)} class names for {counts.numel()} classes")
        self.images = images
        self.counts = counts
        self.offsets = torch.cumsum(counts, 0) - counts
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name

    @classmethod
    def from_grouped(cls, images: Tensor, class_names: Optional[Sequence[str]] = None, name: str = "") -> "ClassIndexSource":
        """Build from ``[n_classes, per_class, *x_shape]`` (every class the same size)."""
        n_classes, per_class = images.shape[:2]
        counts = torch.full((n_classes,), per_class, dtype=torch.int64)
        return cls(images.reshape(n_classes * per_class, *images.shape[2:]), counts, class_names, name)

    @property
    def n_classes(self) -> int:
        """Number of classes in the split."""
        return int(self.counts.numel())

    @property
    def n_images(self) -> int:
        """Number of images in the split."""
        return int(self.images.shape[0])

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def class_images(self, c: int) -> Tensor:
        """The stored images of class ``c`` (as stored: uint8 for image datasets)."""
        start = int(self.offsets[c])
        return self.images[start : start + int(self.counts[c])]

    def sample_index(self, generator: torch.Generator, batch_size: int, n_way: int, k_shot: int, q_queries: int) -> EpisodeIndex:
        """The :class:`EpisodeIndex` that :meth:`sample` turns into images (same generator use)."""
        return sample_episode_index(
            self.counts, generator, batch_size, n_way, k_shot, q_queries, self.name, self.class_names
        )

    def _gather(self, cls: Tensor, slot: Tensor) -> Tensor:
        rows = (self.offsets[cls] + slot).reshape(-1)
        # index_select on a 2-d view is several times faster than advanced indexing on [n, C, H, W]
        x = self.images.reshape(self.images.shape[0], -1).index_select(0, rows)
        x = x.view(*cls.shape, *self.images.shape[1:])
        return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)

    def episode_from_index(self, index: EpisodeIndex, n_way: int) -> Episode:
        """Gather the images of an :class:`EpisodeIndex` into an :class:`Episode`."""
        return Episode(
            support_x=self._gather(index.support_class, index.support_slot),
            support_y=index.support_y.contiguous(),
            query_x=self._gather(index.query_class, index.query_slot),
            query_y=index.query_y.contiguous(),
            kind=CLASSIFICATION,
            n_way=n_way,
        )

    def sample(self, generator: torch.Generator, batch_size: int, n_way: int, k_shot: int, q_queries: int) -> Episode:
        """Draw ``batch_size`` ``n_way``-way ``k_shot``-shot tasks with ``q_queries`` queries per class.

        Raises:
            ValueError: ``n_way`` > classes in the split, or ``k_shot + q_queries`` > images in the smallest class.
        """
        return self.episode_from_index(self.sample_index(generator, batch_size, n_way, k_shot, q_queries), n_way)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, classes={self.n_classes}, images={self.n_images}, "
            f"x_shape={self.x_shape})"
        )
