"""Few-shot tasks from your own images: ``root/<class>/<image>``.

Every image is decoded once (:func:`decode_image`) into one uint8 tensor cached on disk, keyed by
the folder's listing (names, sizes, modification times) and the decoding options; episodes are
then drawn by tensor indexing like Omniglot's.
"""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from rnnmeta.data.archive import load_or_build
from rnnmeta.data.base import SPLITS, FewShotDataset, check_split_name
from rnnmeta.data.sampling import ClassIndexSource, check_count, select_classes
from rnnmeta.episode import CLASSIFICATION

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_CACHE_VERSION = 2  # 2: EXIF orientation applied, 16-bit images scaled instead of saturated

#: Pillow modes of 16-bit (or wider integer) single-channel images, decoded with values 0..65535.
_WIDE_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "as_displayed_8bit", "assign_class_splits", "check_split_fractions", "decode_image"]


def as_displayed_8bit(img: Image.Image) -> Image.Image:
    """The image as a viewer shows it, with 8 bits per channel.

    * EXIF orientation (cameras, phones) is applied with :func:`PIL.ImageOps.exif_transpose`, so
      a photo stored sideways is decoded upright.
    * 16-bit grayscale (Pillow modes ``I;16*``, and ``I``, read as 16-bit values) is scaled by
      ``255 / 65535`` and rounded: Pillow's own ``convert("L")`` clips it, so 1000 and 65535
      would both become 255. 16-bit RGB PNGs are already reduced to 8 bits by Pillow.

    Other modes are returned as they are (``convert`` handles palettes, alpha, 1-bit).
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in _WIDE_INTEGER_MODES:
        values = np.asarray(img, dtype=np.float64)
        scaled = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        img = Image.fromarray(scaled, mode="L")
    return img


def bomb_message(path: object, exc: Exception) -> str:
    """The error for an image over Pillow's decompression-bomb limit, naming the file and what to do."""
    return (
        f"refusing image {path}: {exc} It is larger than Pillow's decompression-bomb limit "
        f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); shrink the image, remove it, or raise "
        "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
    )


def decode_image(path: Path, image_size: int, channels: int, owner: str = "ImageFolder") -> np.ndarray:
    """One image file as uint8 ``[channels, image_size, image_size]``, decoded as every rnnmeta image is.

    :func:`as_displayed_8bit`, then grayscale (``channels=1``) or RGB (``3``), then a Lanczos
    resize to the square ``image_size`` (the aspect ratio is not kept).

    Raises:
        ValueError: the file is not a readable image, or exceeds Pillow's decompression-bomb
            limit (the message names the file; ``owner`` prefixes it).
    """
    try:
        with Image.open(path) as img:
            img = as_displayed_8bit(img).convert("L" if channels == 1 else "RGB")
            if img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
            arr = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{owner}: {bomb_message(path, exc)}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"{owner}: cannot read image {path}: {exc}") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def check_split_fractions(split_fractions: Sequence[float], owner: str = "ImageFolder") -> tuple[float, float, float]:
    """``split_fractions`` as three floats (train, val, test), non-negative and summing to 1; else ``ValueError``."""
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or any(f < 0 or math.isnan(f) for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"{owner} split_fractions must be three non-negative numbers summing to 1 (train, val, test), "
            f"got {tuple(split_fractions)!r}"
        )
    return fractions  # type: ignore[return-value]


def check_split_list_keys(split_lists: Mapping[str, Any], owner: str = "ImageFolder") -> None:
    """Refuse ``split_lists`` keys other than ``train``, ``val``, ``test``."""
    unknown = [k for k in split_lists if k not in SPLITS]
    if unknown:
        raise ValueError(f"{owner} split_lists keys must be among {SPLITS}, got {unknown}")


def assign_class_splits(
    classes: Sequence[Any],
    split_fractions: tuple[float, float, float],
    seed: int,
    split_lists: Optional[Mapping[str, Sequence[Any]]] = None,
    owner: str = "ImageFolder",
) -> dict[str, list[Any]]:
    """Disjoint train / val / test class lists: the class-level split of every rnnmeta dataset.

    * ``split_lists`` given: each split is the classes listed for it (a split without a list is
      empty); a class listed in two splits, or not among ``classes``, is refused.
    * otherwise by fractions: ``classes`` (sorted by the caller) are shuffled with
      ``random.Random(seed)`` and cut at ``round(n * f_train)`` and ``round(n * (f_train + f_val))``.

    Classes are any sortable, hashable values (folder names, integer labels). Every list returned
    is sorted.
    """
    if split_lists is not None:
        check_split_list_keys(split_lists, owner)
        known = set(classes)
        seen: dict[Any, str] = {}
        for split, names in split_lists.items():
            for name in names:
                if name not in known:
                    raise ValueError(f"{owner}: class {name!r} listed for split {split!r} is not one of the {len(known)} classes")
                if name in seen and seen[name] != split:
                    raise ValueError(f"{owner}: class {name!r} is listed in both {seen[name]!r} and {split!r}")
                seen[name] = split
        return {split: sorted(set(names)) for split, names in split_lists.items()}
    order = list(classes)
    random.Random(seed).shuffle(order)
    n = len(order)
    cut1 = round(n * split_fractions[0])
    cut2 = round(n * (split_fractions[0] + split_fractions[1]))
    return {"train": sorted(order[:cut1]), "val": sorted(order[cut1:cut2]), "test": sorted(order[cut2:])}


class ImageFolder(FewShotDataset):
    """Few-shot classification over a folder of class sub-folders, ``root/<class>/<image>``.

    Each sub-folder of ``root`` is a class; files with an image extension
    (:data:`IMAGE_EXTENSIONS`, any case) inside it are its examples; hidden files and folders are
    ignored. Classes are split into disjoint train / val / test sets by :func:`assign_class_splits`,
    by fractions or by name lists (``split_lists={"train": "train.txt", ...}``: one class name a
    line, ``#`` comments ignored, relative paths read relative to ``root``; a split without a list
    cannot be requested). Episodes carry float32 images ``[channels, image_size, image_size]`` in ``[0, 1]``.

    Args:
        root: the folder of class folders.
        image_size: side of the square images after resizing (84 for miniImageNet).
        channels: 1 (grayscale, Pillow mode ``L``) or 3 (RGB).
        split_fractions: fractions of classes for train, val, test; non-negative, summing to 1.
        split_lists: per split, a file listing its classes (overrides ``split_fractions``).
        seed: seed of the class shuffle for ``split_fractions``.
        cache_dir: where the decoded tensor is cached; default env ``RNNMETA_CACHE`` or ``~/.cache/rnnmeta``.

    Raises:
        FileNotFoundError: ``root`` or a split-list file is missing.
        ValueError: no class folders, an empty class folder (named), an unreadable image (named),
            a listed class that does not exist, a class in two lists, bad fractions or options.
    """

    kind = CLASSIFICATION

    def __init__(
        self,
        root: str,
        image_size: int = 84,
        channels: Literal[1, 3] = 3,
        split_fractions: tuple[float, float, float] = (0.64, 0.16, 0.20),
        split_lists: Optional[dict[str, str]] = None,
        seed: int = 0,
        cache_dir: Optional[str] = None,
    ) -> None:
        check_count("ImageFolder image_size", image_size)
        if channels not in (1, 3):
            raise ValueError(f"ImageFolder channels must be 1 or 3, got {channels!r}")
        fractions = check_split_fractions(split_fractions)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder root {self.root} does not exist or is not a folder")
        self.image_size = image_size
        self.channels = channels
        self.split_fractions = fractions
        self.seed = seed
        self._cache_dir = cache_dir
        self.x_shape = (channels, image_size, image_size)
        self.files = self._scan()
        self.classes = sorted(self.files)
        self.class_splits = self._assign(split_lists)
        self._data: Optional[dict[str, Any]] = None
        self._sources: dict[str, ClassIndexSource] = {}

    # ---------------------------------------------------------------- listing
    def _scan(self) -> dict[str, list[Path]]:
        files: dict[str, list[Path]] = {}
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            images = sorted(
                p for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not images:
                raise ValueError(
                    f"ImageFolder: class folder {folder} holds no images (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            files[folder.name] = images
        if not files:
            raise ValueError(f"ImageFolder: {self.root} holds no class folders; expected {self.root}/<class>/<image>")
        return files

    def _read_list(self, split: str, path_str: str) -> list[str]:
        path = Path(path_str).expanduser()
        if not path.is_absolute() and not path.exists():
            path = self.root / path
        if not path.is_file():
            raise FileNotFoundError(f"ImageFolder: split list for {split!r} not found: {path_str} (also tried {path})")
        names = [name for name in (line.split("#", 1)[0].strip() for line in path.read_text().splitlines()) if name]
        for name in names:
            if name not in self.files:
                raise ValueError(f"ImageFolder: class {name!r} listed in {path} is not a class folder of {self.root}")
        return names

    def _assign(self, split_lists: Optional[dict[str, str]]) -> dict[str, list[str]]:
        lists = None
        if split_lists is not None:
            check_split_list_keys(split_lists)
            lists = {split: self._read_list(split, path) for split, path in split_lists.items()}
        return assign_class_splits(self.classes, self.split_fractions, self.seed, lists)

    # --------------------------------------------------------------- decoding
    def cache_path(self) -> Path:
        """Cache file for the current listing and decoding options."""
        h = hashlib.sha1(f"v{_CACHE_VERSION}|{self.root.resolve()}|{self.image_size}|{self.channels}".encode())
        for name in self.classes:
            for p in self.files[name]:
                st = p.stat()
                h.update(f"|{name}/{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return self.cache_dir / f"imagefolder_{self.root.name}_{self.image_size}_{self.channels}_{h.hexdigest()[:16]}.pt"

    def prepare(self) -> None:
        """Decode the images and write the cache (if not there yet)."""
        self._load()

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            expected = {"version": _CACHE_VERSION, "classes": self.classes}
            self._data = load_or_build(self.cache_path(), expected, self._build, "ImageFolder")
        return self._data

    def _build(self) -> dict[str, Any]:
        paths = [p for name in self.classes for p in self.files[name]]
        images = np.empty((len(paths), *self.x_shape), dtype=np.uint8)
        for row, p in enumerate(paths):
            images[row] = decode_image(p, self.image_size, self.channels)
        return {
            "version": _CACHE_VERSION,
            "classes": self.classes,
            "counts": torch.tensor([len(self.files[n]) for n in self.classes], dtype=torch.int64),
            "images": torch.from_numpy(images),
        }

    # ------------------------------------------------------------------ splits
    def split(self, name: str) -> ClassIndexSource:
        """The :class:`~rnnmeta.data.sampling.ClassIndexSource` of split ``name``.

        Raises:
            ValueError: unknown split name, or the split has no classes (no list given / fraction 0).
        """
        check_split_name(name)
        if name in self._sources:
            return self._sources[name]
        names = self.class_splits.get(name, [])
        if not names:
            raise ValueError(
                f"ImageFolder split {name!r} has no classes (split_lists has no {name!r} entry or its fraction "
                f"rounds to 0 of {len(self.classes)} classes)"
            )
        data = self._load()
        index = {n: i for i, n in enumerate(data["classes"])}
        images, counts = select_classes(data["images"], data["counts"], [index[n] for n in names])
        source = ClassIndexSource(images, counts, names, name=name)
        self._sources[name] = source
        return source

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.class_splits.items()}
        return f"ImageFolder(root={str(self.root)!r}, classes={len(self.classes)}, splits={sizes}, x_shape={self.x_shape})"
