"""The online protocol of Santoro et al. (2016): a stream of labelled examples with labels one step late.

A stream of one task holds ``N`` classes x ``I`` instances each (``N = 5``, ``I = 10`` in the paper),
``T = N * I`` steps in random order. At step ``t`` a sequence learner sees the input ``x_t`` and the
*previous* step's label ``y_{t-1}`` (nothing at ``t = 0``: :data:`NO_LABEL`), and predicts ``y_t``.
Accuracy is reported by instance number: the ``i``-th time a class appears in the stream, the
learner has seen ``i - 1`` labelled examples of it (Santoro et al. report instances 1, 2, 3, 5, 10).

A stream is the support set of an ``N``-way ``I``-shot episode (:meth:`ClassIndexSource.sample_index`
with no queries), seeded like the episodes: training batch ``b`` of rank ``r`` from
``(seed, "train", r, b)``, evaluation stream ``i`` of split ``s`` from ``(seed, s, i)``
(:func:`~rnnmeta.data.sampling.make_generator`).

Reference:
    A. Santoro, S. Bartunov, M. Botvinick, D. Wierstra, T. Lillicrap. "Meta-learning with
    memory-augmented neural networks". ICML 2016, section 4.1 and Table 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from rnnmeta.data.base import FewShotDataset
from rnnmeta.data.module import EvalEpisodeSet, TrainEpisodeStream, ResumableTrainLoader, trainer_rank_world
from rnnmeta.data.sampling import ClassIndexSource

__all__ = [
    "NO_LABEL",
    "OnlineStream",
    "OnlineDataModule",
    "instance_numbers",
    "sample_stream",
    "shift_labels",
]

#: the previous-label entry of step 0, which has no previous label
NO_LABEL = -1


def shift_labels(y: Tensor, no_label: int = NO_LABEL) -> Tensor:
    """The labels given as input: ``prev_y[:, t] = y[:, t - 1]`` and ``prev_y[:, 0] = no_label``.

    Args:
        y: ``[B, T]`` int64 labels of the stream.

    Returns:
        ``[B, T]`` int64; a new tensor (``y`` is not modified).
    """
    if not isinstance(y, Tensor) or y.dim() != 2 or y.dtype != torch.int64:
        raise ValueError(f"y must be a [B, T] int64 tensor, got {_describe(y)}")
    prev = torch.full_like(y, no_label)
    prev[:, 1:] = y[:, :-1]
    return prev


def instance_numbers(y: Tensor, n_way: int) -> Tensor:
    """``[B, T]`` int64: at step ``t``, how many times ``y[b, t]`` has appeared up to and including ``t`` (1-based).

    Example: ``y = [[2, 0, 2, 2]]`` gives ``[[1, 1, 2, 3]]``.
    """
    if not isinstance(y, Tensor) or y.dim() != 2 or y.dtype != torch.int64:
        raise ValueError(f"y must be a [B, T] int64 tensor, got {_describe(y)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_way):
        raise ValueError(f"labels must lie in 0..{n_way - 1}, got values in {int(y.min())}..{int(y.max())}")
    counts = torch.nn.functional.one_hot(y, n_way).cumsum(dim=1)  # [B, T, N]
    return counts.gather(2, y.unsqueeze(-1)).squeeze(-1)


def _describe(t: object) -> str:
    if isinstance(t, Tensor):
        return f"{t.dtype} tensor of shape {list(t.shape)}"
    return type(t).__name__


@dataclass
class OnlineStream:
    """A batch of ``B`` streams of ``T = N * I`` steps.

    Attributes:
        x: ``[B, T, *x_shape]`` inputs, float32.
        y: ``[B, T]`` int64 labels to predict (the targets; never an input at the same step).
        prev_y: ``[B, T]`` int64 labels given as input: ``y`` shifted one step, :data:`NO_LABEL` at ``t = 0``.
        instance: ``[B, T]`` int64, 1-based instance number of ``y[b, t]``'s class at step ``t``.
        n_way: ``N``.
    """

    x: Tensor
    y: Tensor
    prev_y: Tensor
    instance: Tensor
    n_way: int

    def __post_init__(self) -> None:
        batch, steps = self.y.shape[:2] if self.y.dim() == 2 else (None, None)
        if self.y.dim() != 2 or self.y.dtype != torch.int64:
            raise ValueError(f"OnlineStream.y must be [B, T] int64, got {_describe(self.y)}")
        if self.x.dim() < 3 or tuple(self.x.shape[:2]) != (batch, steps):
            raise ValueError(f"OnlineStream.x must be [B, T, *x_shape] with B, T = {batch}, {steps}, got {_describe(self.x)}")
        for name in ("prev_y", "instance"):
            t = getattr(self, name)
            if t.shape != self.y.shape or t.dtype != torch.int64:
                raise ValueError(f"OnlineStream.{name} must be [{batch}, {steps}] int64, got {_describe(t)}")

    @property
    def batch_size(self) -> int:
        return int(self.y.shape[0])

    @property
    def length(self) -> int:
        """``T``, the steps of a stream."""
        return int(self.y.shape[1])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "OnlineStream":
        """The same streams on ``device`` (Lightning calls this to move a batch)."""
        fields = (self.x, self.y, self.prev_y, self.instance)
        return OnlineStream(*(t.to(device, non_blocking=non_blocking) for t in fields), self.n_way)

    @staticmethod
    def collate(streams: Sequence["OnlineStream"]) -> "OnlineStream":
        """Concatenate streams of the same ``N`` and ``T`` along the batch."""
        if not streams:
            raise ValueError("OnlineStream.collate needs at least one stream")
        n_way = streams[0].n_way
        if any(s.n_way != n_way or s.length != streams[0].length for s in streams):
            raise ValueError("OnlineStream.collate needs streams of the same n_way and length")
        return OnlineStream(*(torch.cat([getattr(s, f) for s in streams]) for f in ("x", "y", "prev_y", "instance")), n_way)


def sample_stream(
    source: ClassIndexSource, generator: torch.Generator, batch_size: int, n_way: int = 5, instances: int = 10
) -> OnlineStream:
    """Draw ``batch_size`` streams of ``n_way`` classes x ``instances`` examples in random order.

    Args:
        source: a split of a classification dataset (e.g. ``Omniglot(...).split("train")``).
        generator: the only source of randomness (same state, same streams).
        batch_size: streams ``B``.
        n_way: classes per stream ``N`` (labels ``0..N-1``, a fresh random class -> label map per stream).
        instances: examples per class ``I`` (distinct examples; at most the smallest class's size).

    Returns:
        :class:`OnlineStream` of ``T = N * I`` steps.

    Raises:
        TypeError: ``source`` is not a :class:`ClassIndexSource`.
        ValueError: ``n_way`` exceeds the classes, or ``instances`` the images of the smallest class.
    """
    if not isinstance(source, ClassIndexSource):
        raise TypeError(f"sample_stream needs a ClassIndexSource (a classification split), got {type(source).__name__}")
    index = source.sample_index(generator, batch_size, n_way, instances, 0)
    episode = source.episode_from_index(index, n_way)
    y = episode.support_y
    return OnlineStream(episode.support_x, y, shift_labels(y), instance_numbers(y, n_way), n_way)


# --------------------------------------------------------------------------- data module
class OnlineDataModule(pl.LightningDataModule):
    """Streams of the online protocol from any classification :class:`~rnnmeta.data.base.FewShotDataset`.

    Training batch ``b`` of rank ``r`` is a pure function of ``(seed, "train", r, b)``; evaluation
    stream ``i`` of a split of ``(seed, split, i)``, the same for every learner and run (rank ``r`` of
    ``W`` evaluates the streams ``i % W == r``).

    Args:
        dataset: a classification dataset with ``train``/``val``/``test`` splits (e.g. Omniglot).
        n_way: classes per stream (5 in the paper).
        instances: examples per class (10 in the paper); a stream has ``n_way * instances`` steps.
        batch_size: streams per training batch (16 in the paper).
        eval_batch_size: streams per evaluation batch.
        train_batches_per_epoch: training batches in one epoch.
        val_streams, test_streams: sizes of the fixed evaluation sets.
        seed: the one seed every stream derives from.
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int = 5,
        instances: int = 10,
        batch_size: int = 16,
        eval_batch_size: int = 50,
        train_batches_per_epoch: int = 500,
        val_streams: int = 100,
        test_streams: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, FewShotDataset) or dataset.kind != "classification":
            raise TypeError(f"OnlineDataModule needs a classification FewShotDataset, got {type(dataset).__name__}")
        for name, value, least in (("n_way", n_way, 2), ("instances", instances, 1), ("batch_size", batch_size, 1),
                                   ("eval_batch_size", eval_batch_size, 1),
                                   ("train_batches_per_epoch", train_batches_per_epoch, 1),
                                   ("val_streams", val_streams, 1), ("test_streams", test_streams, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"OnlineDataModule {name} must be an int >= {least}, got {value!r}")
        self.dataset, self.n_way, self.instances = dataset, n_way, instances
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.train_batches_per_epoch = train_batches_per_epoch
        self.n_streams = {"val": val_streams, "test": test_streams}
        self.seed = seed
        self._sources: dict[str, ClassIndexSource] = {}

    def prepare_data(self) -> None:
        self.dataset.prepare()

    def source(self, split: str) -> ClassIndexSource:
        if split not in self._sources:
            self._sources[split] = self.dataset.split(split)
        return self._sources[split]

    def _draw(self, split: str, batch_size: int) -> functools.partial:
        """``generator -> OnlineStream`` of ``batch_size`` streams from ``split``."""
        return functools.partial(sample_stream, self.source(split), batch_size=batch_size, n_way=self.n_way,
                                 instances=self.instances)

    def train_batch(self, index: int, rank: int = 0) -> OnlineStream:
        """Training batch ``index`` of ``rank``."""
        return TrainEpisodeStream(self._draw("train", self.batch_size), self.seed, rank, 1).batch(index)

    def eval_stream(self, split: str, index: int) -> OnlineStream:
        """Evaluation stream ``index`` of ``split`` (batch size 1)."""
        return self._eval_set(split).episode(index)

    def _eval_set(self, split: str, rank: int = 0, world: int = 1) -> EvalEpisodeSet:
        return EvalEpisodeSet(self._draw(split, 1), OnlineStream.collate, self.seed, split, self.n_streams[split], rank, world,
                              self.eval_batch_size)

    def train_dataloader(self) -> DataLoader:
        """This rank's training streams, continuing at the batch after the last optimiser step (resume)."""
        trainer = self.trainer
        rank, _ = trainer_rank_world(trainer)
        stream = TrainEpisodeStream(self._draw("train", self.batch_size), self.seed, rank, self.train_batches_per_epoch)
        return ResumableTrainLoader(stream, lambda: 0 if trainer is None else int(trainer.global_step))

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = trainer_rank_world(self.trainer)
        return DataLoader(self._eval_set(split, rank, world), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
