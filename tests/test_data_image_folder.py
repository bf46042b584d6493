"""ImageFolder: a generated folder of class sub-folders; splits, decoding, caching and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rnnmeta.data import EpisodicDataModule, ImageFolder


def make_folder(root: Path, n_classes: int = 10, per_class: int = 4, size: int = 20, uneven: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for c in range(n_classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        n = per_class + (c % 3 if uneven else 0)
        for i in range(n):
            pixels = np.full((size, size + 4, 3), c * 20, dtype=np.uint8)  # class-coded colour, non-square
            pixels[0, 0] = rng.integers(0, 255, 3)
            ext = ".png" if i % 2 == 0 else ".JPG"
            Image.fromarray(pixels).save(folder / f"img{i}{ext}", format="PNG" if ext == ".png" else "JPEG", quality=95)
    (root / ".hidden").mkdir()
    (root / "class_00" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "imgs")


def test_fraction_split_is_disjoint_complete_and_seeded(folder: Path, tmp_path: Path) -> None:
    ds = ImageFolder(str(folder), image_size=8, cache_dir=str(tmp_path / "c"))
    splits = ds.class_splits
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]  # round(10 * .64), round(10 * .8)
    names = [set(splits[s]) for s in ("train", "val", "test")]
    assert not names[0] & names[1] and not names[0] & names[2] and not names[1] & names[2]
    assert set().union(*names) == {f"class_{c:02d}" for c in range(10)}
    again = ImageFolder(str(folder), image_size=8, cache_dir=str(tmp_path / "c"))
    assert again.class_splits == splits
    other = ImageFolder(str(folder), image_size=8, seed=1, cache_dir=str(tmp_path / "c"))
    assert other.class_splits != splits


def test_decoding_shapes_and_values(folder: Path, tmp_path: Path) -> None:
    rgb = ImageFolder(str(folder), image_size=12, channels=3, cache_dir=str(tmp_path / "c"))
    src = rgb.split("train")
    assert src.x_shape == (3, 12, 12) and rgb.x_shape == (3, 12, 12)
    assert src.counts.tolist() == [4] * 6 and src.n_images == 24  # notes.txt and .hidden ignored
    c = int(src.class_names[0].split("_")[1])
    assert abs(int(src.class_images(0)[0, :, 6, 6].float().mean()) - c * 20) <= 2
    gray = ImageFolder(str(folder), image_size=12, channels=1, cache_dir=str(tmp_path / "c"))
    ep = gray.split("val").sample(torch.Generator().manual_seed(0), 3, 2, 2, 2)
    assert ep.support_x.shape == (3, 4, 1, 12, 12) and ep.support_x.dtype == torch.float32
    assert 0.0 <= float(ep.support_x.min()) and float(ep.support_x.max()) <= 1.0
    assert len(list((tmp_path / "c").glob("imagefolder_*.pt"))) == 2


def test_split_lists(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("class_00\nclass_01\n# a comment\n\nclass_02\n")
    (folder / "val.txt").write_text("class_03\n")
    (tmp_path / "test.txt").write_text("class_04\nclass_05\n")
    ds = ImageFolder(
        str(folder),
        image_size=8,
        split_lists={"train": str(tmp_path / "train.txt"), "val": "val.txt", "test": str(tmp_path / "test.txt")},
        cache_dir=str(tmp_path / "c"),
    )
    assert ds.class_splits == {"train": ["class_00", "class_01", "class_02"], "val": ["class_03"], "test": ["class_04", "class_05"]}
    assert ds.split("test").class_names == ["class_04", "class_05"]


def test_uneven_classes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "u", n_classes=6, per_class=3, uneven=True)
    ds = ImageFolder(str(root), image_size=8, split_fractions=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "c"))
    src = ds.split("train")
    assert sorted(src.counts.tolist()) == [3, 3, 4, 4, 5, 5]
    ep = src.sample(torch.Generator().manual_seed(0), 8, 6, 2, 1)
    assert ep.support_x.shape == (8, 12, 3, 8, 8)
    with pytest.raises(ValueError, match=r"3 \+ 1 = 4 exceeds the 3 images of the smallest class \(class_00\)"):
        src.sample(torch.Generator(), 1, 2, 3, 1)
    with pytest.raises(ValueError, match=r"split 'val' has no classes"):
        ds.split("val")


def test_data_module_over_image_folder(folder: Path, tmp_path: Path) -> None:
    dm = EpisodicDataModule(ImageFolder(str(folder), image_size=8, cache_dir=str(tmp_path / "c")), n_way=2, k_shot=1, q_queries=2,
                            meta_batch_size=3, train_batches_per_epoch=2, val_episodes=5, test_episodes=5, eval_batch_size=2)
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0].support_x.shape == (3, 2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"n_way=3 exceeds the 2 classes of split 'val'"):
        EpisodicDataModule(dm.dataset, n_way=3).setup("validate")


# -------------------------------------------------------------------- errors
def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageFolder(str(tmp_path / "nope"))


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no class folders"):
        ImageFolder(str(tmp_path / "empty"))


def test_empty_class_folder(folder: Path) -> None:
    (folder / "class_99").mkdir()
    (folder / "class_99" / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match="class_99"):
        ImageFolder(str(folder))


def test_unreadable_image(folder: Path, tmp_path: Path) -> None:
    (folder / "class_03" / "broken.png").write_bytes(b"\x89PNG garbage")
    ds = ImageFolder(str(folder), image_size=8, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"class_03/broken\.png"):
        ds.split("train")
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir()), "no half-written cache"


def test_unknown_class_in_list(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("class_00\nclass_42\n")
    with pytest.raises(ValueError, match="class_42"):
        ImageFolder(str(folder), split_lists={"train": str(tmp_path / "train.txt")})


def test_missing_list_file(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing_val.txt"):
        ImageFolder(str(folder), split_lists={"val": str(tmp_path / "missing_val.txt")})


def test_class_in_two_lists(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("class_00\n")
    (tmp_path / "b.txt").write_text("class_00\n")
    with pytest.raises(ValueError, match="class_00"):
        ImageFolder(str(folder), split_lists={"train": str(tmp_path / "a.txt"), "test": str(tmp_path / "b.txt")})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"split_fractions": (0.5, 0.5, 0.5)}, r"\(0\.5, 0\.5, 0\.5\)"),
        ({"split_fractions": (1.2, -0.1, -0.1)}, r"-0\.1"),
        ({"channels": 2}, "channels must be 1 or 3, got 2"),
        ({"image_size": 0}, "image_size must be a positive integer, got 0"),
        ({"split_lists": {"training": "x.txt"}}, "'training'"),
    ],
)
def test_bad_options(folder: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ImageFolder(str(folder), **kwargs)


# ------------------------------------------------------------------ images as people have them
def _two_classes(root: Path, first: Path) -> None:
    """``first`` is already written into ``root/a``; add a second plain class ``b``."""
    (root / "b").mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), 128).save(root / "b" / "0.png")


def test_16bit_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    values = np.array([[0, 1000], [20000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(root / "a" / "deep.png")
    _two_classes(root, root / "a" / "deep.png")
    with Image.open(root / "a" / "deep.png") as img:
        assert img.mode.startswith("I")  # really a 16-bit image
    ds = ImageFolder(str(root), image_size=2, channels=1, split_fractions=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "c"))
    x = ds.split("train").class_images(ds.split("train").class_names.index("a"))[0, 0]
    expected = np.rint(values / 65535 * 255).astype(np.uint8)  # 0, 4, 78, 255 (clipping gave 0, 255, 255, 255)
    assert x.tolist() == expected.tolist()


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    stored = np.zeros((16, 16), dtype=np.uint8)
    stored[:, 8:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise -> top black, bottom white
    Image.fromarray(stored).save(root / "a" / "photo.jpg", format="JPEG", quality=95, exif=exif)
    _two_classes(root, root / "a" / "photo.jpg")
    ds = ImageFolder(str(root), image_size=16, channels=1, split_fractions=(1.0, 0.0, 0.0), cache_dir=str(tmp_path / "c"))
    x = ds.split("train").class_images(ds.split("train").class_names.index("a"))[0, 0].float()
    assert x[:6].mean() < 40 and x[10:].mean() > 215, "decoded as stored, not as displayed"
    assert abs(float(x[:, :6].mean() - x[:, 10:].mean())) < 40  # left and right halves alike once upright


def test_decompression_bomb_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    Image.new("L", (40, 40), 0).save(root / "a" / "huge.png")
    _two_classes(root, root / "a" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels > 2 x 100: Pillow's bomb error
    ds = ImageFolder(str(root), image_size=8, channels=1, cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"refusing image \S+/a/huge\.png: .*decompression-bomb limit.*MAX_IMAGE_PIXELS"):
        ds.prepare()
