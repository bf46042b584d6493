"""EpisodicDataModule: seeded, rank-aware episode streams for training and fixed episode sets for evaluation.

Training batch ``b`` of rank ``r`` is drawn from ``(seed, "train", r, b)`` and evaluation episode
``i`` of split ``s`` from ``(seed, s, i)`` (:func:`~rnnmeta.data.sampling.derive_seed`); rank ``r``
of ``W`` evaluates the episodes ``i % W == r``. Loaders wrap :class:`torch.utils.data.IterableDataset`
s that yield whole batches (``DataLoader(batch_size=None)``); worker ``j`` of ``w`` makes the batches
at positions ``p % w == j``, so the order does not depend on ``w``. docs/DATA.md gives the details.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from rnnmeta.data.base import FewShotDataset, TaskSource
from rnnmeta.data.sampling import make_generator
from rnnmeta.episode import Episode

__all__ = ["EpisodicDataModule", "EvalEpisodeSet", "TrainEpisodeStream", "draw_episodes", "trainer_rank_world"]


def _worker_slot() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def draw_episodes(
    source: TaskSource, batch_size: int, n_way: int, k_shot: int, k_shot_max: int, q_queries: int, generator: torch.Generator
) -> Episode:
    """``batch_size`` tasks from ``source``; ``K`` drawn uniformly from ``k_shot..k_shot_max`` with the same generator."""
    k = k_shot
    if k_shot_max > k_shot:
        k += int(torch.randint(k_shot_max - k_shot + 1, (1,), generator=generator))
    return source.sample(generator, batch_size, n_way, k, q_queries)


@dataclass(eq=False)
class TrainEpisodeStream(IterableDataset):
    """One epoch of training batches on one rank: batches ``start_batch .. start_batch + n_batches - 1``.

    Batch ``b`` is ``draw(generator)`` with the generator seeded from ``(seed, "train", rank, b)``:
    a pure function of those values. ``draw`` makes a batch of any kind (an
    :class:`~rnnmeta.episode.Episode` here, a batch of streams for the online protocol).
    """

    draw: Callable[[torch.Generator], Any]
    seed: int
    rank: int
    n_batches: int
    start_batch: int = 0

    def batch(self, index: int) -> Any:
        """Training batch ``index`` of this rank."""
        return self.draw(make_generator(self.seed, "train", self.rank, index))

    def __iter__(self) -> Iterator[Any]:
        worker, n_workers = _worker_slot()
        for position in range(worker, self.n_batches, n_workers):
            yield self.batch(self.start_batch + position)

    def __len__(self) -> int:
        return self.n_batches


@dataclass(eq=False)
class EvalEpisodeSet(IterableDataset):
    """This rank's shard of a fixed evaluation set, in batches of ``batch_size`` episodes.

    Episode ``i`` is ``draw_one(generator)`` with the generator seeded from ``(seed, split, i)``;
    this rank holds ``i % world_size == rank``; a batch is ``collate([episodes])``.
    """

    draw_one: Callable[[torch.Generator], Any]
    collate: Callable[[list[Any]], Any]
    seed: int
    split: str
    n_episodes: int
    rank: int
    world_size: int
    batch_size: int

    @property
    def indices(self) -> list[int]:
        """Episode indices of this rank's shard, in order."""
        return list(range(self.rank, self.n_episodes, self.world_size))

    def batches(self) -> list[list[int]]:
        """The shard's episode indices cut into batches."""
        idx = self.indices
        return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]

    def episode(self, index: int) -> Any:
        """Evaluation episode ``index`` (batch size 1)."""
        return self.draw_one(make_generator(self.seed, self.split, index))

    def __iter__(self) -> Iterator[Any]:
        worker, n_workers = _worker_slot()
        for chunk in self.batches()[worker::n_workers]:
            yield self.collate([self.episode(i) for i in chunk])

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)


def trainer_rank_world(trainer: Optional["pl.Trainer"]) -> tuple[int, int]:
    """``(global_rank, world_size)`` of an attached trainer, ``(0, 1)`` without one."""
    return (0, 1) if trainer is None else (int(trainer.global_rank), int(trainer.world_size))


class ResumableTrainLoader(DataLoader):
    """A DataLoader that sets the stream's start batch each time an epoch's iterator is created."""

    def __init__(self, dataset: TrainEpisodeStream, start_fn: Callable[[], int], num_workers: int = 0) -> None:
        super().__init__(dataset, batch_size=None, num_workers=num_workers)
        self.start_fn = start_fn

    def __iter__(self) -> Any:
        self.dataset.start_batch = int(self.start_fn())  # type: ignore[attr-defined]
        return super().__iter__()


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"EpisodicDataModule {name} must be an integer >= {least}, got {value!r} ({type(value).__name__})")
    if value < least:
        raise ValueError(f"EpisodicDataModule {name} must be >= {least}, got {value}")
    return value


class EpisodicDataModule(pl.LightningDataModule):
    """Few-shot episodes for training, validation and test, from any :class:`~rnnmeta.data.base.FewShotDataset`.

    Train, validation and test draw from the dataset's disjoint ``train``/``val``/``test`` splits.
    See the module docstring for the seeding and sharding guarantees.

    Args:
        dataset: e.g. :class:`~rnnmeta.data.Omniglot`, :class:`~rnnmeta.data.Sinusoid`,
            :class:`~rnnmeta.data.ImageFolder`.
        n_way: classes per task (ignored by regression datasets).
        k_shot: support examples per class during training (support points for regression).
        k_shot_max: if set, each training meta-batch draws its ``K`` uniformly from
            ``k_shot..k_shot_max`` (all tasks of a batch share it). SNAIL trains with 1..5.
        eval_k_shot: ``K`` for validation and test (default ``k_shot``).
        q_queries: queries per class (classification: ``M = N * Q``) or query points (regression).
        eval_q_queries: ``Q`` for validation and test (default ``q_queries``). Setting it apart lets
            learners train with different queries per task (SNAIL: one) on identical evaluation episodes.
        meta_batch_size: tasks per training batch.
        eval_batch_size: tasks per validation/test batch.
        train_batches_per_epoch: training batches in one epoch.
        val_episodes: size of the fixed validation set (MAML used 600).
        test_episodes: size of the fixed test set (ProtoNets: 1000 on Omniglot).
        seed: the one seed all episodes derive from.
        num_workers: DataLoader worker processes (0: sample in the main process; sampling is cheap).

    Raises:
        TypeError: ``dataset`` is not a ``FewShotDataset``.
        ValueError: a non-positive count, ``k_shot_max < k_shot``, a negative seed or worker count
            (the message names the argument and the value). ``setup`` raises ``ValueError`` when
            ``n_way`` or ``k_shot + q_queries`` exceed what a split holds.
    """

    def __init__(
        self,
        dataset: FewShotDataset,
        n_way: int = 5,
        k_shot: int = 1,
        k_shot_max: Optional[int] = None,
        eval_k_shot: Optional[int] = None,
        q_queries: int = 15,
        eval_q_queries: Optional[int] = None,
        meta_batch_size: int = 32,
        eval_batch_size: int = 16,
        train_batches_per_epoch: int = 500,
        val_episodes: int = 600,
        test_episodes: int = 1000,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(dataset, FewShotDataset):
            raise TypeError(f"EpisodicDataModule dataset must be a rnnmeta.data.FewShotDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.n_way = _check_int("n_way", n_way, 1)
        self.k_shot = _check_int("k_shot", k_shot, 1)
        if k_shot_max is not None:
            _check_int("k_shot_max", k_shot_max, 1)
            if k_shot_max < k_shot:
                raise ValueError(f"EpisodicDataModule k_shot_max={k_shot_max} must be >= k_shot={k_shot}")
        self.k_shot_max = k_shot if k_shot_max is None else k_shot_max
        self.eval_k_shot = k_shot if eval_k_shot is None else _check_int("eval_k_shot", eval_k_shot, 1)
        self.q_queries = _check_int("q_queries", q_queries, 1)
        self.eval_q_queries = q_queries if eval_q_queries is None else _check_int("eval_q_queries", eval_q_queries, 1)
        self.meta_batch_size = _check_int("meta_batch_size", meta_batch_size, 1)
        self.eval_batch_size = _check_int("eval_batch_size", eval_batch_size, 1)
        self.train_batches_per_epoch = _check_int("train_batches_per_epoch", train_batches_per_epoch, 1)
        self.val_episodes = _check_int("val_episodes", val_episodes, 1)
        self.test_episodes = _check_int("test_episodes", test_episodes, 1)
        self.seed = _check_int("seed", seed, 0)
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self._train_start_batch = 0
        self._sources: dict[str, TaskSource] = {}

    # ------------------------------------------------------------- properties
    @property
    def kind(self) -> str:
        """``"classification"`` or ``"regression"`` (from the dataset)."""
        return self.dataset.kind

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one input (from the dataset)."""
        return tuple(self.dataset.x_shape)

    @property
    def train_start_batch(self) -> int:
        """Index of the first training batch of the next epoch's stream.

        With a trainer attached: ``trainer.global_step * trainer.accumulate_grad_batches`` (the
        batches consumed so far; equal to ``global_step`` without gradient accumulation), so a run
        resumed from a checkpoint continues the stream where it stopped. Without a trainer: the
        value set here or restored by :meth:`load_state_dict` (default 0).
        """
        if self.trainer is not None:
            return int(self.trainer.global_step) * int(getattr(self.trainer, "accumulate_grad_batches", 1) or 1)
        return self._train_start_batch

    @train_start_batch.setter
    def train_start_batch(self, value: int) -> None:
        self._train_start_batch = _check_int("train_start_batch", value, 0)

    # -------------------------------------------------------------- lifecycle
    def prepare_data(self) -> None:
        """Download and cache the dataset (Lightning calls this on one process)."""
        self.dataset.prepare()

    def source(self, split: str) -> TaskSource:
        """The dataset's task source for ``split`` (cached)."""
        if split not in self._sources:
            self._sources[split] = self.dataset.split(split)
        return self._sources[split]

    def _check_split(self, split: str, k_shot: int, q_queries: int) -> None:
        # a one-task dry run raises the source's ValueError (n_way or k_shot + q_queries too large)
        self.source(split).sample(torch.Generator().manual_seed(0), 1, self.n_way, k_shot, q_queries)

    def setup(self, stage: Optional[str] = None) -> None:
        """Load the splits the stage needs and check that ``n_way``/``k_shot``/``q_queries`` fit them."""
        # Our streams split their work among DataLoader workers themselves (see the module docstring),
        # so their __len__ is exact with any number of workers; Lightning's generic caution about
        # IterableDatasets with a length (raised when the loaders are first used) does not apply.
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
        if stage in (None, "fit"):
            self._check_split("train", self.k_shot_max, self.q_queries)
        if stage in (None, "fit", "validate"):
            self._check_split("val", self.eval_k_shot, self.eval_q_queries)
        if stage in (None, "test", "predict"):
            self._check_split("test", self.eval_k_shot, self.eval_q_queries)

    # ---------------------------------------------------------------- streams
    def train_stream(self, rank: int = 0, world_size: int = 1) -> TrainEpisodeStream:
        """The training stream of ``rank`` (starting at :attr:`train_start_batch`)."""
        draw = functools.partial(
            draw_episodes, self.source("train"), self.meta_batch_size, self.n_way, self.k_shot, self.k_shot_max, self.q_queries
        )
        return TrainEpisodeStream(draw, self.seed, rank, self.train_batches_per_epoch, start_batch=self.train_start_batch)

    def train_batch(self, index: int, rank: int = 0) -> Episode:
        """Training batch ``index`` of ``rank`` (a pure function of ``(seed, rank, index)``)."""
        return self.train_stream(rank).batch(index)

    def eval_set(self, split: str, rank: int = 0, world_size: int = 1) -> EvalEpisodeSet:
        """Rank ``rank``'s shard of the fixed ``"val"`` or ``"test"`` episode set."""
        draw_one = functools.partial(
            draw_episodes, self.source(split), 1, self.n_way, self.eval_k_shot, self.eval_k_shot, self.eval_q_queries
        )
        return EvalEpisodeSet(draw_one, Episode.collate, self.seed, split, self._n_eval(split), rank, world_size, self.eval_batch_size)

    def eval_episode(self, split: str, index: int) -> Episode:
        """Evaluation episode ``index`` of ``split`` (batch size 1)."""
        n = self._n_eval(split)
        if not 0 <= index < n:
            raise ValueError(f"episode index {index} is outside 0..{n - 1} of split {split!r}")
        return self.eval_set(split).episode(index)

    def _n_eval(self, split: str) -> int:
        if split not in ("val", "test"):
            raise ValueError(f"evaluation split must be 'val' or 'test', got {split!r}")
        return getattr(self, f"{split}_episodes")

    def eval_episode_indices(self, split: str, rank: int = 0, world_size: int = 1) -> list[int]:
        """Indices of the ``split`` episodes that rank ``rank`` of ``world_size`` evaluates (``i % world_size == rank``)."""
        n = self._n_eval(split)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        return list(range(rank, n, world_size))

    # ---------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        rank, world = trainer_rank_world(self.trainer)
        stream = self.train_stream(rank, world)
        return ResumableTrainLoader(stream, lambda: self.train_start_batch, num_workers=self.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = trainer_rank_world(self.trainer)
        return DataLoader(self.eval_set(split, rank, world), batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue the same streams: the seed and the next training batch.

        A dataset with a ``state_dict`` method (the text datasets: their vocabulary) adds it under ``"dataset"``.
        """
        state: dict[str, Any] = {"seed": self.seed, "train_start_batch": self.train_start_batch}
        dataset_state = getattr(self.dataset, "state_dict", None)
        if callable(dataset_state):
            state["dataset"] = dataset_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the seed and the start of the training stream)."""
        if "seed" in state_dict:
            self.seed = _check_int("seed", state_dict["seed"], 0)
        if "train_start_batch" in state_dict:
            self._train_start_batch = _check_int("train_start_batch", state_dict["train_start_batch"], 0)
        if "dataset" in state_dict and callable(getattr(self.dataset, "load_state_dict", None)):
            self.dataset.load_state_dict(state_dict["dataset"])
            self._sources.clear()  # re-read from the dataset (a text dataset re-tokenises with the restored vocabulary)

    def __repr__(self) -> str:
        k = f"{self.k_shot}..{self.k_shot_max}" if self.k_shot_max > self.k_shot else str(self.k_shot)
        return (
            f"EpisodicDataModule({self.dataset!r}, n_way={self.n_way}, k_shot={k}, eval_k_shot={self.eval_k_shot}, "
            f"q_queries={self.q_queries}, meta_batch_size={self.meta_batch_size}, seed={self.seed})"
        )
