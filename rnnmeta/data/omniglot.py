"""Omniglot (Lake et al. 2015) for few-shot classification, with the Vinyals et al. (2016) split.

Every PNG of the two official archives (or their extracted folders) is decoded once with Pillow
into one uint8 tensor cached on disk; each split is a
:class:`~rnnmeta.data.sampling.ClassIndexSource` with the rotated copies as extra classes. The
Vinyals split is carried here as a fact, by alphabet (:data:`VINYALS_VAL_ALPHABETS`,
:data:`VINYALS_TEST_ALPHABETS`, Gurmukhi split by character); docs/DATA.md lists the splits and
their sizes. The lists distributed with jakesnell/prototypical-networks
(``splits/vinyals/*.txt``) name the same classes; a test checks it.
"""

from __future__ import annotations

import hashlib
import io
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from rnnmeta.data.archive import (
    CorruptArchiveError,
    DownloadError,
    Opener,
    download_url,
    load_or_build,
    open_zip,
    read_member,
)
from rnnmeta.data.base import FewShotDataset, check_split_name
from rnnmeta.data.image_folder import as_displayed_8bit, bomb_message
from rnnmeta.data.sampling import ClassIndexSource, check_count, select_classes
from rnnmeta.episode import CLASSIFICATION

log = logging.getLogger(__name__)

__all__ = [
    "Omniglot",
    "OMNIGLOT_ARCHIVES",
    "OMNIGLOT_MD5",
    "OMNIGLOT_URLS",
    "VINYALS_TEST_ALPHABETS",
    "VINYALS_VAL_ALPHABETS",
    "vinyals_split_of",
]

OMNIGLOT_ARCHIVES = ("images_background", "images_evaluation")
OMNIGLOT_URLS = {key: f"https://github.com/brendenlake/omniglot/raw/master/python/{key}.zip" for key in OMNIGLOT_ARCHIVES}
OMNIGLOT_MD5 = {
    "images_background": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811",
}
OMNIGLOT_HOME = "https://github.com/brendenlake/omniglot/tree/master/python"

VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TEST_ALPHABETS = (
    "Kannada",
    "Keble",
    "Malayalam",
    "Manipuri",
    "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)",
    "Oriya",
    "Sylheti",
    "Syriac_(Serto)",
    "Tengwar",
    "Tibetan",
    "ULOG",
)
#: Gurmukhi is split by character: 01-41 train, 42-45 test.
VINYALS_GURMUKHI_FIRST_TEST = 42

ROTATIONS = (0, 90, 180, 270)
_CACHE_VERSION = 1


def vinyals_split_of(alphabet: str, character: int) -> str:
    """The Vinyals et al. (2016) split (``"train"``, ``"val"`` or ``"test"``) of ``<alphabet>/character<NN>``."""
    if alphabet in VINYALS_VAL_ALPHABETS:
        return "val"
    if alphabet in VINYALS_TEST_ALPHABETS:
        return "test"
    if alphabet == "Gurmukhi":
        return "test" if character >= VINYALS_GURMUKHI_FIRST_TEST else "train"
    return "train"


def _decode(data: bytes, image_size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        gray = ImageOps.invert(as_displayed_8bit(img).convert("L"))  # ink = 255, background = 0
        if gray.size != (image_size, image_size):
            gray = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
        return np.asarray(gray, dtype=np.uint8)


class Omniglot(FewShotDataset):
    """Omniglot characters as few-shot classification tasks (Lake, Salakhutdinov & Tenenbaum 2015).

    Decodes every PNG of ``root`` once into a uint8 tensor (ink = 255) cached at
    ``<cache_dir>/omniglot_<image_size>_<hash>.pt``; episodes carry float32 images ``[1, S, S]``
    in ``[0, 1]`` with ink = 1.0. Splits (disjoint, whole characters with all their rotations):

    * ``"vinyals"`` (Vinyals et al. 2016, "Matching Networks for One Shot Learning"): both
      archives pooled, by alphabet; 4,112 / 688 / 1,692 classes with rotations.
    * ``"background_evaluation"``: test = the 20 evaluation alphabets, val = the five Vinyals
      validation alphabets, train = the other 25 background alphabets; 3,168 / 688 / 2,636 classes.

    Args:
        root: folder holding the archives or their extracted folders.
        split: ``"vinyals"`` or ``"background_evaluation"``.
        rotations: add each character rotated by 90, 180 and 270 degrees (counter-clockwise,
            ``torch.rot90``) as three extra classes, named ``<Alphabet>/characterNN/rotDDD``.
        image_size: side of the square images after resizing (the papers use 28).
        download: fetch missing archives from the official repository and verify their md5.
            Archives or folders already in ``root`` are used as they are (a re-encoded local copy
            has a different md5 and is accepted).
        cache_dir: where the decoded tensor is cached; default env ``RNNMETA_CACHE`` or
            ``~/.cache/rnnmeta``.

    Raises:
        ValueError: unknown ``split``, bad ``image_size``.
        FileNotFoundError: (with ``download=False``) ``root`` or an archive is missing; the message
            names the path and the expected files.
        CorruptArchiveError: a zip is corrupt or truncated (names the file), raised when the cache is built.
        UnsafeArchiveError: a zip member's path would escape the target folder.
        DownloadError: ``download=True`` without network; the message says which files to put where.

    Example:
        >>> ds = Omniglot("../shared/data/omniglot")            # doctest: +SKIP
        >>> ep = ds.split("train").sample(torch.Generator().manual_seed(0), 32, 5, 1, 15)  # doctest: +SKIP
    """

    kind = CLASSIFICATION
    urls: dict[str, str] = OMNIGLOT_URLS
    md5: dict[str, str] = OMNIGLOT_MD5
    #: ``opener(url, timeout=...)`` used by downloads; ``None`` means ``urllib.request.urlopen``.
    opener: Optional[Opener] = None

    def __init__(
        self,
        root: str = "data/omniglot",
        split: Literal["vinyals", "background_evaluation"] = "vinyals",
        rotations: bool = True,
        image_size: int = 28,
        download: bool = False,
        cache_dir: Optional[str] = None,
    ) -> None:
        if split not in ("vinyals", "background_evaluation"):
            raise ValueError(f"Omniglot split must be 'vinyals' or 'background_evaluation', got {split!r}")
        check_count("Omniglot image_size", image_size)
        self.root = Path(root).expanduser()
        self.split_scheme = split
        self.rotations = bool(rotations)
        self.image_size = image_size
        self.download = bool(download)
        self._cache_dir = cache_dir
        self.x_shape = (1, image_size, image_size)
        self._data: Optional[dict[str, Any]] = None
        self._sources: dict[str, ClassIndexSource] = {}
        self._check_root_is_not_a_file()
        if not self.download:
            self._locate()  # fail early, at configuration time, when files are missing

    # ------------------------------------------------------------------ files
    def _missing_message(self, what: str) -> str:
        return (
            f"Omniglot: {what}. Expected in {self.root}: images_background.zip and images_evaluation.zip "
            f"(from {OMNIGLOT_HOME}) or their extracted folders images_background/ and images_evaluation/. "
            f"Pass download=True to fetch them."
        )

    def _check_root_is_not_a_file(self) -> None:
        """Refuse a ``root`` that names a file (typically one of the archives) instead of their folder."""
        if self.root.is_file():
            hint = (
                f"set root to {self.root.parent}, the folder that holds it"
                if self.root.suffix.lower() == ".zip"
                else "set root to the folder that holds them"
            )
            raise NotADirectoryError(
                f"Omniglot: root {self.root} is a file, not a folder; root must be the folder holding "
                f"images_background.zip and images_evaluation.zip (or their extracted folders): {hint}"
            )

    def _locate(self) -> dict[str, Path]:
        """Map each archive key to its zip file or extracted folder in ``root``."""
        self._check_root_is_not_a_file()
        if not self.root.is_dir():
            raise FileNotFoundError(self._missing_message(f"root folder {self.root} does not exist"))
        found: dict[str, Path] = {}
        for key in OMNIGLOT_ARCHIVES:
            zip_path, folder = self.root / f"{key}.zip", self.root / key
            if zip_path.is_file():
                found[key] = zip_path
            elif folder.is_dir():
                found[key] = folder
            else:
                raise FileNotFoundError(self._missing_message(f"neither {zip_path} nor {folder}/ exists"))
        return found

    def prepare(self) -> None:
        """Download missing archives (if ``download=True``) and build the cache; idempotent."""
        if self.download:
            self._download()
        self._load()

    def _download(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for key in OMNIGLOT_ARCHIVES:
            zip_path, folder = self.root / f"{key}.zip", self.root / key
            if zip_path.is_file() or folder.is_dir():
                continue  # a local copy is accepted as it is
            url = self.urls[key]
            log.info("downloading %s to %s", url, zip_path)
            try:
                download_url(url, zip_path, md5=self.md5.get(key), opener=self.opener)
            except DownloadError as exc:
                raise DownloadError(
                    f"{exc}. Without network, download images_background.zip and images_evaluation.zip "
                    f"from {OMNIGLOT_HOME} by hand and put them in {self.root}"
                ) from exc

    def _fingerprint(self, files: dict[str, Path]) -> str:
        h = hashlib.sha1(f"v{_CACHE_VERSION}".encode())
        for key in OMNIGLOT_ARCHIVES:
            path = files[key]
            if path.is_file():
                h.update(f"|{path.name}:{path.stat().st_size}".encode())
            else:
                pngs = list(path.rglob("*.png"))
                h.update(f"|{path.name}/:{len(pngs)}:{sum(p.stat().st_size for p in pngs)}".encode())
        return h.hexdigest()[:16]

    def cache_path(self) -> Path:
        """Path of the decoded-image cache for the files now in ``root``."""
        return self.cache_dir / f"omniglot_{self.image_size}_{self._fingerprint(self._locate())}.pt"

    # ---------------------------------------------------------------- decoding
    @staticmethod
    def _members(path: Path, key: str) -> list[tuple[str, str, str]]:
        """``(alphabet, character, member)`` for every PNG; ``member`` is a zip name or a file path."""
        out = []
        if path.is_file():
            with open_zip(path) as zf:
                names = zf.namelist()
        else:
            names = [p.relative_to(path).as_posix() for p in path.rglob("*.png")]
        for name in names:
            parts = [p for p in name.split("/") if p]
            if not name.lower().endswith(".png") or len(parts) < 3 or any(p.startswith((".", "__MACOSX")) for p in parts):
                continue
            out.append((parts[-3], parts[-2], name))
        if not out:
            raise CorruptArchiveError(
                f"{path} holds no PNG images laid out as {key}/<Alphabet>/characterNN/<file>.png"
            )
        return sorted(out)

    def _build(self, files: dict[str, Path]) -> dict[str, Any]:
        start = time.perf_counter()
        listed = {key: self._members(path, key) for key, path in files.items()}
        total = sum(len(v) for v in listed.values())
        images = np.empty((total, self.image_size, self.image_size), dtype=np.uint8)
        names: list[str] = []
        counts: list[int] = []
        archive_of: list[int] = []
        row = 0
        desc = f"Decoding Omniglot ({total} PNGs, once)"
        with tqdm(total=total, desc=desc, unit="img", mininterval=1.0, leave=False) as bar:
            for a, key in enumerate(OMNIGLOT_ARCHIVES):
                path = files[key]
                with open_zip(path) if path.is_file() else contextlib.nullcontext() as zf:
                    for alphabet, character, member in listed[key]:
                        name = f"{alphabet}/{character}"
                        if not names or names[-1] != name:
                            names.append(name)
                            counts.append(0)
                            archive_of.append(a)
                        if zf is not None:
                            data = read_member(zf, member, path)
                            where = f"member {member!r} of {path}"
                        else:
                            data = (path / member).read_bytes()
                            where = f"file {path / member}"
                        try:
                            images[row] = _decode(data, self.image_size)
                        except Image.DecompressionBombError as exc:
                            raise CorruptArchiveError(bomb_message(where, exc)) from exc
                        except (UnidentifiedImageError, OSError, ValueError) as exc:
                            raise CorruptArchiveError(f"cannot decode {where}: {exc}") from exc
                        counts[-1] += 1
                        row += 1
                        bar.update(1)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[:3]
            raise CorruptArchiveError(f"Omniglot characters appear in both archives: {dup}")
        log.info("decoded %d Omniglot images in %.1f s", total, time.perf_counter() - start)
        return {
            "version": _CACHE_VERSION,
            "image_size": self.image_size,
            "images": torch.from_numpy(images).unsqueeze(1),  # [n_images, 1, S, S]
            "names": names,
            "counts": torch.tensor(counts, dtype=torch.int64),
            "archive": torch.tensor(archive_of, dtype=torch.int64),
        }

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            files = self._locate()
            path = self.cache_dir / f"omniglot_{self.image_size}_{self._fingerprint(files)}.pt"
            expected = {"version": _CACHE_VERSION, "image_size": self.image_size}
            self._data = load_or_build(path, expected, lambda: self._build(files), "Omniglot")
        return self._data

    # ------------------------------------------------------------------ splits
    def split_of_character(self, name: str, archive: int) -> str:
        """Split (``"train"``/``"val"``/``"test"``) of character ``<Alphabet>/characterNN`` from archive index ``archive``."""
        alphabet, character = name.split("/")
        if self.split_scheme == "vinyals":
            return vinyals_split_of(alphabet, int(character.replace("character", "")))
        if archive == 1:
            return "test"
        return "val" if alphabet in VINYALS_VAL_ALPHABETS else "train"

    def split(self, name: str) -> ClassIndexSource:
        """The :class:`~rnnmeta.data.sampling.ClassIndexSource` of split ``name`` (``"train"``, ``"val"``, ``"test"``).

        Builds or loads the cache on first use.
        """
        check_split_name(name)
        if name in self._sources:
            return self._sources[name]
        data = self._load()
        chosen = [
            i for i, (char, arch) in enumerate(zip(data["names"], data["archive"].tolist()))
            if self.split_of_character(char, arch) == name
        ]
        if not chosen:
            raise ValueError(f"Omniglot split {name!r} of scheme {self.split_scheme!r} has no characters")
        base, base_counts = select_classes(data["images"], data["counts"], chosen)
        base_names = [data["names"][i] for i in chosen]
        rotations = ROTATIONS if self.rotations else (0,)
        images = torch.cat([torch.rot90(base, k=deg // 90, dims=(-2, -1)) for deg in rotations])
        class_counts = base_counts.repeat(len(rotations))
        class_names = [f"{n}/rot{deg:03d}" for deg in rotations for n in base_names]
        source = ClassIndexSource(images.contiguous(), class_counts, class_names, name=name)
        self._sources[name] = source
        return source

    def __repr__(self) -> str:
        return (
            f"Omniglot(root={str(self.root)!r}, split={self.split_scheme!r}, rotations={self.rotations}, "
            f"image_size={self.image_size})"
        )
