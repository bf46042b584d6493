"""Any labelled dataset as few-shot tasks: a torch ``Dataset`` of ``(x, label)`` pairs -> :class:`FewShotDataset`.

torchvision-style datasets (MNIST, CIFAR, a user's own ``Dataset``) hold one example per index
with its class label. :class:`LabelledDataset` reads every pair once, stacks the examples into
one tensor grouped by class (the tensor cache the episode sampler indexes, as for Omniglot and
:class:`~rnnmeta.data.ImageFolder`), splits the *classes* into disjoint train / val / test sets with
the conventions of :class:`~rnnmeta.data.ImageFolder` (fractions or lists, the same code:
:func:`~rnnmeta.data.image_folder.assign_class_splits`), and serves each split as a
:class:`~rnnmeta.data.sampling.ClassIndexSource`.

An optional per-example ``transform`` (augmentation) is applied to training episodes only; the
validation and test episodes stay fixed and untransformed. It draws its randomness from a
generator seeded by the training episode's own generator, so training stays a pure function of
the data module's seed, and the same examples are chosen with or without it.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from rnnmeta.data.base import FewShotDataset, check_split_name
from rnnmeta.data.image_folder import as_displayed_8bit, assign_class_splits, check_split_fractions
from rnnmeta.data.sampling import ClassIndexSource, select_classes
from rnnmeta.episode import CLASSIFICATION, Episode

__all__ = ["ExampleTransform", "LabelledDataset", "TransformedSource"]

#: A per-example augmentation: ``(x [*x_shape] float32, generator) -> x' [*x_shape]``. All its
#: randomness must come from ``generator`` (``torch.rand(..., generator=generator)``).
ExampleTransform = Callable[[Tensor, torch.Generator], Tensor]

Label = Union[int, str]


def _as_example(x: Any, index: int) -> Tensor:
    """One example as a tensor: tensors as they are, arrays, numbers, or a PIL image as uint8 ``[C, H, W]``."""
    if isinstance(x, Tensor):
        return x.detach().cpu()
    if isinstance(x, Image.Image):
        img = as_displayed_8bit(x)
        img = img.convert("L" if img.getbands() in (("L",), ("1",), ("L", "A"), ("I",), ("F",)) else "RGB")
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr[None].copy() if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"LabelledDataset: example {index} is a {type(x).__name__}, which is not a tensor, array, number or PIL image"
        ) from err


def _as_label(y: Any, index: int) -> Label:
    """A class label as an int or a str (0-d tensors and numpy integers become ints)."""
    if isinstance(y, (Tensor, np.ndarray)):
        integer = y.dtype.kind in "iu" if isinstance(y, np.ndarray) else not (y.dtype.is_floating_point or y.dtype.is_complex
                                                                             or y.dtype == torch.bool)
        if y.ndim != 0 or not integer:
            raise TypeError(f"LabelledDataset: label of example {index} must be a single integer, got {y!r}")
        return int(y.item())
    if isinstance(y, (bool, float)) or not isinstance(y, (int, np.integer, str)):
        raise TypeError(f"LabelledDataset: label of example {index} must be an int or a str, got {y!r} ({type(y).__name__})")
    return int(y) if isinstance(y, (int, np.integer)) else y


class TransformedSource(ClassIndexSource):
    """A :class:`ClassIndexSource` whose episodes pass every example through a per-example ``transform``.

    The episode's examples are chosen exactly as by :class:`ClassIndexSource` (the same generator
    draws, so the same examples); then one 63-bit seed is drawn from the episode's generator and
    a generator seeded with it is handed to ``transform`` for each example in a fixed order
    (task by task, support set then queries). The episode is therefore a pure function of the
    generator's state.
    """

    def __init__(self, images: Tensor, counts: Tensor, transform: ExampleTransform,
                 class_names: Optional[Sequence[str]] = None, name: str = "") -> None:
        super().__init__(images, counts, class_names, name)
        self.transform = transform

    def _apply(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``x [B, n, *x_shape]`` -> the same with ``transform`` applied to each of the ``B * n`` examples."""
        flat = x.reshape(-1, *x.shape[2:])
        out = torch.empty_like(flat)
        for i in range(flat.shape[0]):
            y = self.transform(flat[i].clone(), generator)
            if not isinstance(y, Tensor) or tuple(y.shape) != tuple(flat.shape[1:]):
                got = list(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise ValueError(
                    f"LabelledDataset transform {getattr(self.transform, '__name__', self.transform)!r} must return a "
                    f"tensor of the example's shape {list(flat.shape[1:])}, got {got}"
                )
            out[i] = y
        return out.view_as(x)

    def sample(self, generator: torch.Generator, batch_size: int, n_way: int, k_shot: int, q_queries: int) -> Episode:
        episode = super().sample(generator, batch_size, n_way, k_shot, q_queries)
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        aug = torch.Generator().manual_seed(seed)
        return Episode(
            support_x=self._apply(episode.support_x, aug),
            support_y=episode.support_y,
            query_x=self._apply(episode.query_x, aug),
            query_y=episode.query_y,
            kind=CLASSIFICATION,
            n_way=n_way,
        )


class LabelledDataset(FewShotDataset):
    """Few-shot classification over any dataset of ``(x, label)`` pairs (e.g. a torchvision-style dataset).

    Every pair is read once (``dataset[i]`` for ``i < len(dataset)``, on first use) and the examples
    are stacked into one tensor ordered by class: episodes are then drawn by indexing it. Examples
    may be tensors, numpy arrays, numbers or PIL images (decoded to uint8 ``[C, H, W]`` like
    :class:`~rnnmeta.data.ImageFolder`'s, without resizing); all must have the same shape and dtype.
    uint8 examples are pixels and reach the learner as float32 in ``[0, 1]`` (divided by 255); any
    other dtype is converted to float32 as it is. Labels are ints or strs (0-d integer tensors
    count as ints); each distinct label is a class.

    Classes are split into train / val / test either

    * by fractions: the sorted labels are shuffled with ``random.Random(seed)`` and cut at
      ``round(n * f_train)`` and ``round(n * (f_train + f_val))`` (as :class:`ImageFolder`), or
    * by label lists: ``split_labels={"train": [0, 1, ...], "val": [...], "test": [...]}``; a
      split without a list cannot be requested, a label in two lists or absent from the data is
      refused.

    Args:
        dataset: a map-style dataset: ``len(dataset)`` and ``dataset[i] -> (x, label)``.
        split_fractions: fractions of classes for train, val, test; non-negative, summing to 1.
        split_labels: per split, the labels of its classes (overrides ``split_fractions``).
        seed: seed of the class shuffle for ``split_fractions``.
        transform: per-example augmentation ``(x [*x_shape] float32 in [0, 1] for pixels, generator)
            -> x'``, applied to training episodes only (support and queries); its randomness must
            come from the generator it is given. ``None``: no augmentation.

    Raises:
        ValueError: bad fractions or split keys (at construction); an empty dataset, examples of
            different shapes or dtypes (naming the first differing index), a listed label that is
            not in the data or is listed twice (when the examples are first read).
        TypeError: an item that is not an ``(x, label)`` pair, an example or label of an
            unsupported type (naming the index).

    Example:
        >>> data = EpisodicDataModule(LabelledDataset(my_mnist, split_labels={"train": [0, 1, 2, 3, 4, 5],
        ...                           "val": [6, 7], "test": [8, 9]}), n_way=2, k_shot=1, q_queries=5)
    """

    kind = CLASSIFICATION

    def __init__(
        self,
        dataset: Dataset,
        split_fractions: tuple[float, float, float] = (0.64, 0.16, 0.20),
        split_labels: Optional[dict[str, list[Union[int, str]]]] = None,
        seed: int = 0,
        transform: Optional[ExampleTransform] = None,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"LabelledDataset needs a map-style dataset (len(dataset) and dataset[i] -> (x, label)), "
                f"got {type(dataset).__name__}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"LabelledDataset transform must be callable (x, generator) -> x, got {transform!r}")
        self.split_fractions = check_split_fractions(split_fractions, owner="LabelledDataset")
        if split_labels is not None:
            # assign_class_splits checks the keys; lists of labels are checked against the data when it is read
            split_labels = {k: list(v) for k, v in split_labels.items()}
            assign_class_splits([], self.split_fractions, seed, {k: [] for k in split_labels}, owner="LabelledDataset")
        self.dataset = dataset
        self.split_labels = split_labels
        self.seed = seed
        self.transform = transform
        self._examples: Optional[Tensor] = None
        self._counts: Optional[Tensor] = None
        self._classes: list[Label] = []
        self._class_splits: dict[str, list[Label]] = {}
        self._sources: dict[str, ClassIndexSource] = {}

    # ------------------------------------------------------------------ the cache
    def _read(self) -> tuple[Tensor, list[Label]]:
        """Every example stacked ``[n, *x_shape]`` and its label, in dataset order."""
        n = len(self.dataset)
        if n == 0:
            raise ValueError("LabelledDataset: the dataset is empty (len(dataset) == 0)")
        examples: Optional[Tensor] = None
        labels: list[Label] = []
        for i in range(n):
            item = self.dataset[i]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"LabelledDataset: dataset[{i}] must be an (x, label) pair, got {type(item).__name__}"
                    f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}"
                )
            x, y = _as_example(item[0], i), _as_label(item[1], i)
            if examples is None:
                examples = torch.empty((n, *x.shape), dtype=x.dtype)
            elif tuple(x.shape) != tuple(examples.shape[1:]) or x.dtype != examples.dtype:
                raise ValueError(
                    f"LabelledDataset: example {i} has shape {list(x.shape)} and dtype {x.dtype}, but example 0 has "
                    f"{list(examples.shape[1:])} and {examples.dtype}; every example must have the same shape and dtype "
                    "(resize or pad them in the dataset)"
                )
            examples[i] = x
            labels.append(y)
        if len({type(y) for y in labels}) > 1:
            raise TypeError("LabelledDataset: labels mix ints and strs; use one type for every label")
        assert examples is not None
        return examples, labels

    def _load(self) -> None:
        """Read the dataset once, group the examples by class, split the classes."""
        if self._examples is not None:
            return
        examples, labels = self._read()
        classes = sorted(set(labels))
        position = {c: i for i, c in enumerate(classes)}
        class_of = torch.tensor([position[y] for y in labels], dtype=torch.int64)
        order = torch.argsort(class_of, stable=True)  # grouped by class, dataset order within a class
        self._class_splits = assign_class_splits(
            classes, self.split_fractions, self.seed, self.split_labels, owner="LabelledDataset"
        )
        self._examples = examples[order].contiguous()
        self._counts = torch.bincount(class_of, minlength=len(classes))
        self._classes = classes

    def prepare(self) -> None:
        """Read the dataset into the tensor cache (in memory; each process reads it once)."""
        self._load()

    @property
    def classes(self) -> list[Label]:
        """Every label of the dataset, sorted (reads the dataset on first use)."""
        self._load()
        return list(self._classes)

    @property
    def class_splits(self) -> dict[str, list[Label]]:
        """The labels of each split's classes, sorted (reads the dataset on first use)."""
        self._load()
        return {k: list(v) for k, v in self._class_splits.items()}

    @property
    def x_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """Shape of one example (reads the dataset on first use)."""
        self._load()
        assert self._examples is not None
        return tuple(self._examples.shape[1:])

    # ------------------------------------------------------------------ splits
    def split(self, name: str) -> ClassIndexSource:
        """The task source of split ``name``; the training split applies ``transform`` when one is given.

        Raises:
            ValueError: unknown split name, or the split has no classes (no list given / fraction 0).
        """
        check_split_name(name)
        if name in self._sources:
            return self._sources[name]
        self._load()
        assert self._examples is not None and self._counts is not None
        chosen_labels = self._class_splits.get(name, [])
        if not chosen_labels:
            raise ValueError(
                f"LabelledDataset split {name!r} has no classes (split_labels has no {name!r} entry or its fraction "
                f"rounds to 0 of {len(self._classes)} classes)"
            )
        position = {c: i for i, c in enumerate(self._classes)}
        images, counts = select_classes(self._examples, self._counts, [position[c] for c in chosen_labels])
        names = [str(c) for c in chosen_labels]
        if name == "train" and self.transform is not None:
            source: ClassIndexSource = TransformedSource(images, counts, self.transform, names, name=name)
        else:
            source = ClassIndexSource(images, counts, names, name=name)
        self._sources[name] = source
        return source

    def __repr__(self) -> str:
        if self._examples is None:
            return f"LabelledDataset(dataset={type(self.dataset).__name__}, examples={len(self.dataset)}, not read yet)"
        sizes = {k: len(v) for k, v in self._class_splits.items()}
        return (
            f"LabelledDataset(dataset={type(self.dataset).__name__}, classes={len(self._classes)}, splits={sizes}, "
            f"x_shape={self.x_shape}{', transform=' + repr(self.transform) if self.transform is not None else ''})"
        )
