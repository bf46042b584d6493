"""Archive helpers: download with checksum, safe zip reading/extraction, atomic file writes.

Everything that touches files the user did not write goes through here, so that every dataset
gets the same guarantees: a download or a cache appears under its name only when complete
(temporary file, then :func:`os.replace`), a zip member whose path would escape its folder is
refused before anything is written, and a corrupt or truncated zip raises
:class:`CorruptArchiveError` naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator, Optional, Union

import torch

PathLike = Union[str, "os.PathLike[str]"]
Opener = Callable[..., IO[bytes]]

__all__ = [
    "ArchiveError",
    "ChecksumError",
    "CorruptArchiveError",
    "DownloadError",
    "UnsafeArchiveError",
    "atomic_torch_save",
    "check_zip_members",
    "default_cache_dir",
    "download_url",
    "load_or_build",
    "md5sum",
    "open_zip",
    "safe_extract_zip",
]


class ArchiveError(ValueError):
    """Base class of the archive errors below (a ``ValueError``: the input is bad)."""


class ChecksumError(ArchiveError):
    """A downloaded file's md5 does not match the expected one."""


class CorruptArchiveError(ArchiveError):
    """A zip file is not a zip, is truncated, or has a member that fails its CRC."""


class UnsafeArchiveError(ArchiveError):
    """A zip member's path would land outside the extraction folder."""


class DownloadError(OSError):
    """A download failed (no network, HTTP error); the message says where to put the files by hand."""


def default_cache_dir() -> Path:
    """The cache folder: env ``RNNMETA_CACHE`` if set, else ``~/.cache/rnnmeta``."""
    env = os.environ.get("RNNMETA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rnnmeta"


def md5sum(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _atomic_file(dest: Path, suffix: str) -> Iterator[IO[bytes]]:
    """A temporary file beside ``dest``, moved onto ``dest`` when the block ends normally and removed on any error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download_url(
    url: str,
    dest: PathLike,
    md5: Optional[str] = None,
    opener: Optional[Opener] = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, verifying its md5 before the file appears under its name.

    The bytes go to a temporary file in ``dest``'s folder; it is renamed to ``dest`` only after
    the checksum passes, and removed on any failure, so a failed download leaves no file.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        dest: where the file should end up.
        md5: expected hex md5; ``None`` skips the check.
        opener: ``opener(url, timeout=...)`` returning a readable binary file object; defaults to
            :func:`urllib.request.urlopen`. Tests inject one to avoid the network.
        timeout: seconds, passed to the opener.

    Raises:
        DownloadError: the opener failed (no network, HTTP error, missing file).
        ChecksumError: the md5 of the downloaded bytes is not ``md5``.
    """
    dest = Path(dest)
    open_fn = opener if opener is not None else urllib.request.urlopen
    digest = hashlib.md5()
    with _atomic_file(dest, ".part") as out:
        try:
            with contextlib.closing(open_fn(url, timeout=timeout)) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DownloadError(f"could not download {url}: {exc}") from exc
        got = digest.hexdigest()
        if md5 is not None and got != md5.lower():
            raise ChecksumError(f"md5 of the file downloaded from {url} is {got}, expected {md5}; the file was discarded")
    return dest


# ------------------------------------------------------------------ zip files
def _member_problem(info: zipfile.ZipInfo) -> Optional[str]:
    """Why a zip member may not be extracted, or ``None`` if it is safe."""
    norm = info.filename.replace("\\", "/")
    if "\x00" in norm:
        return "contains a NUL byte"
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "contains '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def check_zip_members(zf: zipfile.ZipFile, archive: PathLike) -> None:
    """Refuse a zip whose member paths would escape the folder they are extracted into.

    Raises:
        UnsafeArchiveError: naming the archive and the first offending member.
    """
    for info in zf.infolist():
        problem = _member_problem(info)
        if problem is not None:
            raise UnsafeArchiveError(
                f"refusing archive {archive}: member {info.filename!r} {problem} and would escape the target folder"
            )


@contextlib.contextmanager
def open_zip(path: PathLike) -> Iterator[zipfile.ZipFile]:
    """Open a zip for reading after checking that it is a zip and that its member paths are safe.

    Raises:
        FileNotFoundError: no such file.
        CorruptArchiveError: not a zip, or truncated (names the file).
        UnsafeArchiveError: a member path escapes (see :func:`check_zip_members`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"archive {path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptArchiveError(f"{path} is not a readable zip archive (corrupt or truncated?): {exc}") from exc
    try:
        check_zip_members(zf, path)
        yield zf
    finally:
        zf.close()


def read_member(zf: zipfile.ZipFile, name: str, archive: PathLike) -> bytes:
    """Read one member, turning zip/zlib/CRC failures into :class:`CorruptArchiveError`."""
    try:
        return zf.read(name)
    except Exception as exc:  # BadZipFile (bad CRC), zlib.error, EOFError on truncation
        raise CorruptArchiveError(f"{archive} is corrupt or truncated: cannot read member {name!r}: {exc}") from exc


def safe_extract_zip(path: PathLike, target: PathLike) -> Path:
    """Extract a zip into ``target`` after checking every member path (nothing written if one is unsafe).

    The extraction goes to a temporary folder inside ``target``'s parent and its top-level entries
    are moved into ``target`` when all members were written, so an interrupted extraction leaves
    no partial tree.

    Raises:
        CorruptArchiveError, UnsafeArchiveError, FileNotFoundError: see :func:`open_zip`.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with open_zip(path) as zf:
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
        try:
            root = tmp.resolve()
            for info in zf.infolist():
                dest = (tmp / info.filename).resolve()
                if dest != root and root not in dest.parents:  # belt and braces after check_zip_members
                    raise UnsafeArchiveError(f"refusing archive {path}: member {info.filename!r} would escape {target}")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(read_member(zf, info.filename, path))
            for entry in tmp.iterdir():
                final = target / entry.name
                if final.exists():
                    shutil.rmtree(final) if final.is_dir() else final.unlink()
                os.replace(entry, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_or_build(path: Path, expected: dict[str, Any], build: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
    """The tensor cache at ``path`` if it loads (``weights_only``) and holds the ``expected`` entries; else ``build()``.

    A built cache is written with :func:`atomic_torch_save`. A cache that does not load (an older
    version, a damaged disk) is logged as ``what``'s and rebuilt. Processes that start together on a
    cold cache (a comparison's parallel runs, parallel test workers) build it once: the builder holds
    a lock file named after the cache's path in the system's temporary folder (not beside the cache,
    which keeps only complete caches) and the others wait for it, then load what it wrote.
    """
    from filelock import FileLock

    data = _load_cache(path, expected, what)
    if data is not None:
        return data
    key = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    with FileLock(os.path.join(tempfile.gettempdir(), f"rnnmeta-cache-{key}.lock")):
        data = _load_cache(path, expected, what, quiet=True)  # another process may have built it meanwhile
        if data is None:
            data = build()
            atomic_torch_save(data, path)
    return data


def _load_cache(path: Path, expected: dict[str, Any], what: str, quiet: bool = False) -> Optional[dict[str, Any]]:
    """The cache at ``path`` if it loads and holds the ``expected`` entries; else None (logged when unreadable, unless ``quiet``)."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, weights_only=True)
    except Exception as exc:  # a cache from an older version or a damaged disk: rebuild it
        if not quiet:
            logging.getLogger(__name__).warning("ignoring unreadable %s cache %s (%s); rebuilding it", what, path, exc)
        return None
    return data if all(data.get(key) == value for key, value in expected.items()) else None


def atomic_torch_save(obj: object, path: PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then :func:`os.replace` it into place.

    Concurrent writers each write their own temporary file; the last rename wins and every reader
    sees either no file or a complete one.
    """
    path = Path(path)
    with _atomic_file(path, ".tmp") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return path
