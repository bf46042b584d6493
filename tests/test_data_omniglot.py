"""Omniglot: counts and splits on the real data, caching, rotations, downloads, and every bad input."""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from rnnmeta.data import ChecksumError, CorruptArchiveError, DownloadError, Omniglot, UnsafeArchiveError
from rnnmeta.data.archive import atomic_torch_save, download_url, load_or_build, safe_extract_zip

# ----------------------------------------------------------------- real data
VINYALS = {"train": (1028, 4112), "val": (172, 688), "test": (423, 1692)}
BACKGROUND_EVALUATION = {"train": 792, "val": 172, "test": 659}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_vinyals_counts(omniglot: Omniglot, split: str) -> None:
    chars, classes = VINYALS[split]
    src = omniglot.split(split)
    assert src.n_classes == classes
    assert src.n_images == classes * 20
    assert src.counts.unique().tolist() == [20]
    assert len({n.rsplit("/", 1)[0] for n in src.class_names}) == chars
    assert src.images.dtype == torch.uint8 and src.x_shape == (1, 28, 28)


def test_all_images_decoded(omniglot: Omniglot) -> None:
    data = omniglot._load()
    assert data["images"].shape == (32460, 1, 28, 28)
    assert len(data["names"]) == 1623
    assert int((data["archive"] == 0).sum()) == 964 and int((data["archive"] == 1).sum()) == 659


def test_vinyals_split_equals_shared_lists(omniglot: Omniglot, omniglot_root: Path) -> None:
    for split in ("train", "val", "test"):
        listed = (omniglot_root / "splits" / "vinyals" / f"{split}.txt").read_text().split()
        ours = omniglot.split(split).class_names
        assert len(ours) == len(set(ours))
        assert sorted(ours) == sorted(listed), split


def test_vinyals_splits_disjoint(omniglot: Omniglot) -> None:
    names = {s: set(omniglot.split(s).class_names) for s in ("train", "val", "test")}
    chars = {s: {n.rsplit("/", 1)[0] for n in v} for s, v in names.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not names[a] & names[b]
        assert not chars[a] & chars[b]


def test_ink_is_one_background_zero(omniglot: Omniglot) -> None:
    ep = omniglot.split("val").sample(torch.Generator().manual_seed(0), 4, 5, 1, 1)
    x = ep.support_x
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert float(x.mean()) < 0.3  # mostly background
    corners = x[..., 0, 0]
    assert float(corners.max()) == 0.0  # corners are background


def test_rotations_are_rot90_copies(omniglot: Omniglot) -> None:
    src = omniglot.split("test")
    index = {n: i for i, n in enumerate(src.class_names)}
    base = src.class_images(index["Tengwar/character03/rot000"])
    for k, deg in enumerate((90, 180, 270), start=1):
        rotated = src.class_images(index[f"Tengwar/character03/rot{deg:03d}"])
        assert torch.equal(rotated, torch.rot90(base, k, dims=(-2, -1)))


def test_background_evaluation_split(omniglot_root: Path, session_cache_dir: Path) -> None:
    ds = Omniglot(str(omniglot_root), split="background_evaluation", rotations=False, cache_dir=str(session_cache_dir))
    chars = {}
    for split, n in BACKGROUND_EVALUATION.items():
        src = ds.split(split)
        assert src.n_classes == n and src.n_images == 20 * n
        chars[split] = {c.rsplit("/", 1)[0] for c in src.class_names}
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"] and not chars["val"] & chars["test"]
    assert {c.split("/")[0] for c in chars["val"]} == {"Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)"}
    with_rot = Omniglot(str(omniglot_root), split="background_evaluation", cache_dir=str(session_cache_dir))
    assert with_rot.split("test").n_classes == 4 * 659


def test_rotations_off_counts(omniglot_root: Path, session_cache_dir: Path) -> None:
    ds = Omniglot(str(omniglot_root), rotations=False, cache_dir=str(session_cache_dir))
    assert [ds.split(s).n_classes for s in ("train", "val", "test")] == [1028, 172, 423]
    assert all(n.endswith("/rot000") for n in ds.split("val").class_names)


def test_cache_file_reused(omniglot: Omniglot, omniglot_root: Path, session_cache_dir: Path) -> None:
    omniglot.split("train")
    path = omniglot.cache_path()
    assert path.parent == session_cache_dir and path.name.startswith("omniglot_28_") and path.is_file()
    assert not list(session_cache_dir.glob(f".{path.name}.*")), "no temp files left"
    start = time.perf_counter()
    again = Omniglot(str(omniglot_root), cache_dir=str(session_cache_dir))
    src = again.split("val")
    assert time.perf_counter() - start < 10.0
    assert torch.equal(src.images, omniglot.split("val").images)


def test_default_cache_dir_from_env(omniglot_root: Path, session_cache_dir: Path) -> None:
    assert Omniglot(str(omniglot_root)).cache_dir == session_cache_dir  # RNNMETA_CACHE, set by conftest


def test_download_accepts_local_copy(omniglot_root: Path, session_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, timeout: float = 0) -> io.BytesIO:
        raise AssertionError(f"must not fetch {url}: a local copy is present")

    monkeypatch.setattr(Omniglot, "opener", staticmethod(no_network))
    ds = Omniglot(str(omniglot_root), download=True, cache_dir=str(session_cache_dir))
    ds.prepare()  # the shared copy's md5 differs from the official one and is accepted
    assert ds.split("val").n_classes == 688


# ------------------------------------------------------- generated fake data
def png_bytes(seed: int, size: int = 105) -> bytes:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, generator=g) > 0.1).numpy()  # True = white background
    buf = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buf, format="PNG")
    return buf.getvalue()


FAKE = {
    # alphabet -> (archive, characters); Vinyals: Latin train, Hebrew val, Kannada test
    "Latin": ("images_background", 3),
    "Hebrew": ("images_background", 2),
    "Kannada": ("images_evaluation", 2),
}


def fake_members(key: str) -> dict[str, bytes]:
    out = {}
    cid = 1
    for alphabet, (archive, n_chars) in FAKE.items():
        for c in range(1, n_chars + 1):
            if archive == key:
                for d in range(1, 5):
                    out[f"{key}/{alphabet}/character{c:02d}/{cid:04d}_{d:02d}.png"] = png_bytes(cid * 100 + d)
            cid += 1
    return out


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def fake_root(tmp_path: Path, as_folders: bool = False) -> Path:
    root = tmp_path / "omniglot"
    root.mkdir(parents=True)
    for key in ("images_background", "images_evaluation"):
        if as_folders:
            for name, data in fake_members(key).items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
        else:
            write_zip(root / f"{key}.zip", fake_members(key))
    return root


def test_fake_zip_and_folder_agree(tmp_path: Path) -> None:
    zipped = Omniglot(str(fake_root(tmp_path / "z")), image_size=14, cache_dir=str(tmp_path / "c1"))
    folders = Omniglot(str(fake_root(tmp_path / "f", as_folders=True)), image_size=14, cache_dir=str(tmp_path / "c2"))
    for split, chars in (("train", 3), ("val", 2), ("test", 2)):
        a, b = zipped.split(split), folders.split(split)
        assert a.n_classes == 4 * chars and a.class_names == b.class_names
        assert torch.equal(a.images, b.images)
        assert a.x_shape == (1, 14, 14)
    ep = zipped.split("train").sample(torch.Generator().manual_seed(0), 2, 3, 1, 2)
    assert ep.support_x.shape == (2, 3, 1, 14, 14)


def test_decode_inverts_and_resizes(tmp_path: Path) -> None:
    root = tmp_path / "o"
    root.mkdir()
    img = Image.new("1", (105, 105), 1)  # white background
    for x in range(40, 65):
        for y in range(0, 105):
            img.putpixel((x, y), 0)  # a vertical ink bar
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_zip(root / "images_background.zip", {f"images_background/Latin/character01/0001_{d:02d}.png": buf.getvalue() for d in range(1, 3)})
    write_zip(root / "images_evaluation.zip", {f"images_evaluation/Kannada/character01/0002_{d:02d}.png": buf.getvalue() for d in range(1, 3)})
    ds = Omniglot(str(root), rotations=False, cache_dir=str(tmp_path / "c"))
    x = ds.split("train").class_images(0)[0, 0]
    assert x.dtype == torch.uint8 and x.shape == (28, 28)
    assert int(x[5, 14]) == 255  # ink = 255 in the middle column
    assert int(x[5, 0]) == 0 and int(x[5, 27]) == 0  # background = 0


def test_concurrent_style_atomic_write_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "cache.pt"
    atomic_torch_save({"a": torch.arange(3)}, target)
    atomic_torch_save({"a": torch.arange(4)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["cache.pt"]


def test_processes_on_a_cold_cache_build_it_once(tmp_path: Path) -> None:
    import threading
    import time

    target = tmp_path / "cache" / "data.pt"
    builds: list[int] = []

    def build() -> dict:
        builds.append(1)
        time.sleep(0.5)  # long enough for the other caller to find no cache and wait for the lock
        return {"version": 1, "x": torch.arange(5)}

    results: list[dict] = []
    callers = [
        threading.Thread(target=lambda: results.append(load_or_build(target, {"version": 1}, build, "test")))
        for _ in range(2)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(builds) == 1 and len(results) == 2
    assert all(torch.equal(r["x"], torch.arange(5)) for r in results)
    assert [p.name for p in target.parent.iterdir()] == ["data.pt"]  # the lock lives elsewhere
    load_or_build(target, {"version": 2}, build, "test")  # a cache that no longer matches is rebuilt
    assert len(builds) == 2


def test_failed_build_leaves_no_cache(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    members = fake_members("images_evaluation")
    members["images_evaluation/Kannada/character01/0004_09.png"] = b"not a png at all"
    write_zip(root / "images_evaluation.zip", members)
    cache = tmp_path / "cache"
    ds = Omniglot(str(root), cache_dir=str(cache))
    with pytest.raises(CorruptArchiveError, match=r"0004_09\.png"):
        ds.split("train")
    assert not cache.exists() or not any(cache.iterdir())


# -------------------------------------------------------------------- errors
def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        Omniglot(str(missing))
    assert "images_background.zip" in str(info.value) and "images_evaluation.zip" in str(info.value)


def test_missing_one_archive(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / "images_evaluation.zip").unlink()
    with pytest.raises(FileNotFoundError, match=r"images_evaluation\.zip"):
        Omniglot(str(root))


def test_not_a_zip(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / "images_background.zip").write_bytes(b"this is not a zip archive")
    with pytest.raises(CorruptArchiveError, match=r"images_background\.zip"):
        Omniglot(str(root), cache_dir=str(tmp_path / "c")).split("train")


def test_truncated_zip(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    path = root / "images_background.zip"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError, match=r"images_background\.zip"):
        Omniglot(str(root), cache_dir=str(tmp_path / "c")).split("train")
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_corrupt_member_crc(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    path = root / "images_background.zip"
    data = bytearray(path.read_bytes())
    # flip bytes inside the first member's stored data (after its 30-byte local header and name)
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + 10
    for i in range(start, start + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArchiveError, match=r"images_background\.zip"):
        Omniglot(str(root), cache_dir=str(tmp_path / "c")).split("train")


@pytest.mark.parametrize("evil", ["../escape.png", "/abs/olute.png", "images_background/../../x/character01/a.png"])
def test_zip_member_escaping_is_refused(tmp_path: Path, evil: str) -> None:
    root = fake_root(tmp_path)
    members = fake_members("images_background")
    members[evil] = png_bytes(1)
    write_zip(root / "images_background.zip", members)
    with pytest.raises(UnsafeArchiveError, match=rf"images_background\.zip.*{evil.replace('.', '[.]')[:8]}"):
        Omniglot(str(root), cache_dir=str(tmp_path / "c")).split("train")
    with pytest.raises(UnsafeArchiveError):
        safe_extract_zip(root / "images_background.zip", tmp_path / "out")
    assert not (tmp_path / "escape.png").exists() and not list((tmp_path / "out").rglob("*.png"))


def test_safe_extract_normal_zip(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "a.zip", {"top/x.txt": b"hello", "top/sub/y.txt": b"world"})
    out = safe_extract_zip(path, tmp_path / "out")
    assert (out / "top" / "x.txt").read_bytes() == b"hello" and (out / "top" / "sub" / "y.txt").read_bytes() == b"world"
    assert sorted(p.name for p in out.iterdir()) == ["top"]


def test_bad_split_and_options(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    with pytest.raises(ValueError, match="'lake'"):
        Omniglot(str(root), split="lake")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size.*0"):
        Omniglot(str(root), image_size=0)
    ds = Omniglot(str(root), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="'validation'"):
        ds.split("validation")


def test_n_way_and_shots_too_large(tmp_path: Path) -> None:
    ds = Omniglot(str(fake_root(tmp_path)), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"n_way=9 exceeds the 8 classes of split 'val'"):
        ds.split("val").sample(torch.Generator(), 1, 9, 1, 1)
    with pytest.raises(ValueError, match=r"3 \+ 2 = 5 exceeds the 4 images"):
        ds.split("val").sample(torch.Generator(), 1, 2, 3, 2)


# ------------------------------------------------------------------ download
def serve_from(files: dict[str, bytes]):
    def opener(url: str, timeout: float = 0) -> io.BytesIO:
        if url not in files:
            raise urllib.error.URLError(f"no route to {url}")
        return io.BytesIO(files[url])

    return opener


def test_download_verifies_and_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = fake_root(tmp_path / "src")
    blobs = {f"https://example.invalid/{k}.zip": (src / f"{k}.zip").read_bytes() for k in ("images_background", "images_evaluation")}
    monkeypatch.setattr(Omniglot, "urls", {k: f"https://example.invalid/{k}.zip" for k in ("images_background", "images_evaluation")})
    monkeypatch.setattr(
        Omniglot, "md5", {k: hashlib.md5(blobs[f"https://example.invalid/{k}.zip"]).hexdigest() for k in ("images_background", "images_evaluation")}
    )
    monkeypatch.setattr(Omniglot, "opener", staticmethod(serve_from(blobs)))
    root = tmp_path / "dl"
    ds = Omniglot(str(root), download=True, cache_dir=str(tmp_path / "c"))
    ds.prepare()
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip", "images_evaluation.zip"]
    assert ds.split("test").n_classes == 8


def test_download_file_url(tmp_path: Path) -> None:
    blob = write_zip(tmp_path / "src.zip", {"a/b.txt": b"x"})
    dest = download_url(blob.as_uri(), tmp_path / "out" / "got.zip", md5=hashlib.md5(blob.read_bytes()).hexdigest())
    assert dest.read_bytes() == blob.read_bytes()


def test_download_wrong_checksum_leaves_no_file(tmp_path: Path) -> None:
    blob = write_zip(tmp_path / "src.zip", {"a/b.txt": b"x"})
    dest = tmp_path / "out" / "got.zip"
    with pytest.raises(ChecksumError, match="0123456789abcdef0123456789abcdef"):
        download_url(blob.as_uri(), dest, md5="0123456789abcdef0123456789abcdef")
    assert not dest.exists() and not list(dest.parent.iterdir())


def test_download_without_network_says_where_to_put_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Omniglot, "opener", staticmethod(serve_from({})))
    root = tmp_path / "dl"
    ds = Omniglot(str(root), download=True, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DownloadError) as info:
        ds.prepare()
    msg = str(info.value)
    assert "images_background.zip" in msg and "images_evaluation.zip" in msg and str(root) in msg
    assert not list(root.iterdir())


def test_omniglot_download_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = fake_root(tmp_path / "src")
    blobs = {Omniglot.urls[k]: (src / f"{k}.zip").read_bytes() for k in ("images_background", "images_evaluation")}
    monkeypatch.setattr(Omniglot, "opener", staticmethod(serve_from(blobs)))  # official md5s will not match
    root = tmp_path / "dl"
    with pytest.raises(ChecksumError, match="68d2efa1b9178cc56df9314c21c6e718"):
        Omniglot(str(root), download=True, cache_dir=str(tmp_path / "c")).prepare()
    assert not list(root.iterdir())


def test_root_pointing_at_the_zip_says_so(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    for download in (False, True):
        with pytest.raises(NotADirectoryError, match=r"root \S+/images_background\.zip is a file, not a folder.*set root to \S+"):
            Omniglot(str(root / "images_background.zip"), download=download, cache_dir=str(tmp_path / "c"))


def test_decompression_bomb_names_the_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_root(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # the fake 105x105 drawings exceed 2 x 1,000 pixels
    with pytest.raises(CorruptArchiveError, match=r"refusing image member '\S+\.png' of \S+\.zip: .*MAX_IMAGE_PIXELS"):
        Omniglot(str(root), cache_dir=str(tmp_path / "c")).split("train")
