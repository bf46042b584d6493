"""LabelledDataset: any (x, label) dataset as few-shot tasks, class-level splits, training-only augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from rnnmeta.data import ClassIndexSource, EpisodicDataModule, ImageFolder, LabelledDataset, make_generator
from rnnmeta.data.labelled import TransformedSource

N_CLASSES, PER_CLASS = 12, 6


class ToyDataset(Dataset):
    """``n_classes x per_class`` uint8 images ``[1, 4, 4]``; example j of class c is filled with ``10 * c + j``.

    The items are interleaved (class = index % n_classes), as real datasets are, and labels are
    offset by ``label_offset`` so that labels are not 0..n-1.
    """

    def __init__(self, n_classes: int = N_CLASSES, per_class: int = PER_CLASS, label_offset: int = 100) -> None:
        self.n_classes, self.per_class, self.label_offset = n_classes, per_class, label_offset

    def __len__(self) -> int:
        return self.n_classes * self.per_class

    def __getitem__(self, i: int):
        c, j = i % self.n_classes, i // self.n_classes
        return torch.full((1, 4, 4), 10 * c + j, dtype=torch.uint8), torch.tensor(c + self.label_offset)


def class_of_pixel(x: torch.Tensor) -> torch.Tensor:
    """The class encoded in an example of ToyDataset (floats in [0, 1]): ``round(255 x) // 10``."""
    return torch.round(x.flatten(-3)[..., 0] * 255).long() // 10


def flip_and_noise(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A per-example augmentation drawing from its generator: random horizontal flip plus small noise."""
    if bool(torch.rand((), generator=generator) < 0.5):
        x = x.flip(-1)
    return x + 0.01 * torch.randn(x.shape, generator=generator)


# ------------------------------------------------------------------ the cache and the splits
def test_examples_are_grouped_by_class_and_splits_follow_image_folder_conventions():
    ds = LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25), seed=3)
    assert ds.classes == list(range(100, 100 + N_CLASSES))
    assert ds.x_shape == (1, 4, 4)
    splits = ds.class_splits
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == ds.classes
    # the same rule as ImageFolder: sorted classes shuffled by random.Random(seed), cut by round()
    import random

    order = list(ds.classes)
    random.Random(3).shuffle(order)
    assert splits["train"] == sorted(order[:6]) and splits["test"] == sorted(order[9:])
    assert LabelledDataset(ToyDataset(), seed=4).class_splits != LabelledDataset(ToyDataset(), seed=3).class_splits
    for split in ("train", "val", "test"):
        source = ds.split(split)
        assert isinstance(source, ClassIndexSource) and not isinstance(source, TransformedSource)
        assert source.class_names == [str(c) for c in splits[split]]
        for k, label in enumerate(splits[split]):
            rows = source.class_images(k)  # uint8, in dataset order within the class
            c = label - 100
            assert rows.flatten(1)[:, 0].tolist() == [10 * c + j for j in range(PER_CLASS)]


def test_episodes_carry_the_examples_of_their_labels():
    ds = LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25))
    source = ds.split("train")
    episode = source.sample(make_generator(0, "train", 0), batch_size=4, n_way=3, k_shot=2, q_queries=3)
    assert episode.support_x.shape == (4, 6, 1, 4, 4) and episode.support_x.dtype == torch.float32
    train_classes = torch.tensor(ds.class_splits["train"]) - 100
    index = source.sample_index(make_generator(0, "train", 0), 4, 3, 2, 3)
    for x, y, cls in ((episode.support_x, episode.support_y, index.support_class), (episode.query_x, episode.query_y, index.query_class)):
        assert torch.equal(class_of_pixel(x), train_classes[cls])
        assert torch.equal(index.classes.gather(1, y), cls)  # label j of task b is class classes[b, j]


def test_split_labels_lists():
    ds = LabelledDataset(ToyDataset(label_offset=0), split_labels={"train": [0, 1, 2, 3, 4, 5, 6], "val": [7, 8], "test": [9, 10, 11]})
    assert ds.class_splits == {"train": list(range(7)), "val": [7, 8], "test": [9, 10, 11]}
    assert class_of_pixel(ds.split("val").images.float() / 255).unique().tolist() == [7, 8]
    only_train = LabelledDataset(ToyDataset(label_offset=0), split_labels={"train": [0, 1]})
    with pytest.raises(ValueError, match=r"split 'test' has no classes"):
        only_train.split("test")
    with pytest.raises(ValueError, match=r"class 42 listed for split 'val' is not one of the 12 classes"):
        LabelledDataset(ToyDataset(label_offset=0), split_labels={"train": [0], "val": [42]}).split("train")
    with pytest.raises(ValueError, match=r"class 1 is listed in both 'train' and 'test'"):
        LabelledDataset(ToyDataset(label_offset=0), split_labels={"train": [0, 1], "test": [1]}).split("train")


def test_string_labels_pil_images_and_numpy_examples():
    class Pictures(Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int):
            img = Image.fromarray(np.full((5, 7, 3), 30 * i, dtype=np.uint8), mode="RGB")
            return img, ["cat", "dog"][i % 2]

    ds = LabelledDataset(Pictures(), split_labels={"train": ["cat"], "test": ["dog"]})
    assert ds.x_shape == (3, 5, 7)
    cats = ds.split("train").images
    assert cats.dtype == torch.uint8 and cats[:, 0, 0, 0].tolist() == [0, 60, 120, 180]

    class Arrays(Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int):
            return np.array([i, -i], dtype=np.float32), np.int64(i % 3)

    arrays = LabelledDataset(Arrays(), split_fractions=(1.0, 0.0, 0.0))
    assert arrays.x_shape == (2,) and arrays.classes == [0, 1, 2]
    assert arrays.split("train").images.dtype == torch.float32


# ------------------------------------------------------------------ augmentation at training time only
def test_transform_applies_to_training_episodes_only_and_is_reproducible():
    calls = []

    def counting(x, generator):
        calls.append(1)
        return flip_and_noise(x, generator)

    plain = LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25))
    aug = LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25), transform=counting)
    assert isinstance(aug.split("train"), TransformedSource)
    g = lambda: make_generator(0, "train", 0, 7)  # noqa: E731
    before = plain.split("train").sample(g(), 2, 3, 2, 1)
    after = aug.split("train").sample(g(), 2, 3, 2, 1)
    assert len(calls) == 2 * (6 + 3)  # every support and query example, once
    assert not torch.equal(after.support_x, before.support_x)
    # the same examples and labels are chosen; only the pixels changed (the toy examples are constant, so a
    # flip leaves them as they were and the noise of std 0.01 stays far below 0.1)
    assert torch.equal(after.support_y, before.support_y) and torch.equal(after.query_y, before.query_y)
    assert (after.support_x - before.support_x).abs().max() < 0.1 and (after.query_x - before.query_x).abs().max() < 0.1
    again = aug.split("train").sample(g(), 2, 3, 2, 1)
    assert torch.equal(again.support_x, after.support_x) and torch.equal(again.query_x, after.query_x)
    other = aug.split("train").sample(make_generator(0, "train", 0, 8), 2, 3, 2, 1)
    assert not torch.equal(other.support_x, after.support_x)
    for split in ("val", "test"):
        assert type(aug.split(split)) is ClassIndexSource
        e1 = aug.split(split).sample(make_generator(0, split, 3), 1, 3, 1, 2)
        e2 = plain.split(split).sample(make_generator(0, split, 3), 1, 3, 1, 2)
        assert torch.equal(e1.support_x, e2.support_x) and torch.equal(e1.query_x, e2.query_x)


def test_in_the_data_module_training_is_reproducible_and_test_episodes_stay_fixed():
    def module(transform):
        ds = LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25), transform=transform)
        dm = EpisodicDataModule(ds, n_way=3, k_shot=1, q_queries=2, meta_batch_size=2, eval_batch_size=2,
                                train_batches_per_epoch=3, val_episodes=4, test_episodes=4, seed=5)
        dm.setup("fit")
        dm.setup("test")
        return dm

    a, b, plain = module(flip_and_noise), module(flip_and_noise), module(None)
    train_a, train_b, train_plain = (list(m.train_dataloader()) for m in (a, b, plain))
    assert all(torch.equal(x.support_x, y.support_x) for x, y in zip(train_a, train_b))
    assert not any(torch.equal(x.support_x, y.support_x) for x, y in zip(train_a, train_plain))
    for x, y in zip(a.test_dataloader(), plain.test_dataloader()):
        assert torch.equal(x.support_x, y.support_x) and torch.equal(x.query_x, y.query_x)


def test_a_transform_that_changes_the_shape_is_refused():
    ds = LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25), transform=lambda x, g: x[..., :2])
    with pytest.raises(ValueError, match=r"must return a tensor of the example's shape \[1, 4, 4\], got \[1, 4, 2\]"):
        ds.split("train").sample(make_generator(0, "train", 0), 1, 2, 1, 1)


# ------------------------------------------------------------------ configuration and bad input
def test_configurable_like_every_dataset(tmp_path):
    """LightningCLI builds it from class_path specs (the dataset too): typed arguments only."""
    from jsonargparse import ArgumentParser

    from rnnmeta.data import FewShotDataset

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(FewShotDataset, "dataset")
    cfg = parser.parse_object({"dataset": {
        "class_path": "rnnmeta.data.LabelledDataset",
        "init_args": {"dataset": {"class_path": f"{__name__}.ToyDataset", "init_args": {"n_classes": 4}},
                      "split_labels": {"train": [100, 101], "test": [102, 103]},
                      "transform": f"{__name__}.flip_and_noise"},
    }})
    ds = parser.instantiate_classes(cfg).dataset
    assert isinstance(ds, LabelledDataset) and ds.class_splits == {"train": [100, 101], "test": [102, 103]}
    assert ds.transform.__name__ == "flip_and_noise" and isinstance(ds.split("train"), TransformedSource)


@pytest.mark.parametrize(
    "items,error,match",
    [
        ([], ValueError, r"the dataset is empty"),
        ([torch.zeros(2)], TypeError, r"dataset\[0\] must be an \(x, label\) pair, got Tensor"),
        ([(torch.zeros(2), 0), (torch.zeros(3), 1)], ValueError, r"example 1 has shape \[3\].*example 0 has \[2\]"),
        ([(torch.zeros(2), 0), (torch.zeros(2, dtype=torch.float64), 1)], ValueError, r"example 1 .* dtype torch.float64"),
        ([(torch.zeros(2), 0.5)], TypeError, r"label of example 0 must be an int or a str, got 0.5"),
        ([(torch.zeros(2), torch.tensor([1, 2]))], TypeError, r"label of example 0 must be a single integer"),
        ([(torch.zeros(2), 0), (torch.zeros(2), "a")], TypeError, r"labels mix ints and strs"),
        ([(object(), 0)], TypeError, r"example 0 is a object"),
    ],
)
def test_bad_items_are_named(items, error, match):
    with pytest.raises(error, match=match):
        LabelledDataset(items, split_fractions=(1.0, 0.0, 0.0)).split("train")


def test_bad_options():
    with pytest.raises(ValueError, match=r"split_fractions must be three non-negative numbers summing to 1.*\(0.5, 0.6, 0.0\)"):
        LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.6, 0.0))
    with pytest.raises(ValueError, match=r"split_lists keys must be among .*'training'"):
        LabelledDataset(ToyDataset(), split_labels={"training": [1]})
    with pytest.raises(TypeError, match=r"map-style dataset"):
        LabelledDataset(iter([(torch.zeros(1), 0)]))
    with pytest.raises(TypeError, match=r"transform must be callable"):
        LabelledDataset(ToyDataset(), transform=3)
    with pytest.raises(ValueError, match=r"n_way=7 exceeds the 6 classes of split 'train'"):
        LabelledDataset(ToyDataset(), split_fractions=(0.5, 0.25, 0.25)).split("train").sample(make_generator(0, "train"), 1, 7, 1, 1)


def test_image_folder_split_code_is_shared():
    """ImageFolder and LabelledDataset cut classes with the same function (not a copy that could drift)."""
    import rnnmeta.data.image_folder as image_folder
    import rnnmeta.data.labelled as labelled

    assert labelled.assign_class_splits is image_folder.assign_class_splits
    assert ImageFolder._assign.__code__.co_names.count("assign_class_splits") == 1
