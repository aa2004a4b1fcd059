"""Image classification data sets as uint8 arrays, decoded once and then memory-mapped from a cache.

`load_dataset("mnist")` finds the files (see `fedp2p.learn.sources`), checks them
against their published hashes, decodes them, and stores the arrays as `.npy`
files so later loads (by every peer process) are a cheap `np.load(mmap_mode="r")`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fedp2p.errors import UserError
from fedp2p.learn import formats, imagefolder, sources

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist", "cifar10")
CACHE_FORMAT = 1  # bump when decoding changes, so stale caches are ignored
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
STATS_CHUNK = 4096
CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "cifar10": formats.CIFAR10_CLASSES,
}
SHAPES: dict[str, tuple[int, int, tuple[int, int, int]]] = {
    "mnist": (60_000, 10_000, (1, 28, 28)),
    "fashion-mnist": (60_000, 10_000, (1, 28, 28)),
    "cifar10": (50_000, 10_000, (3, 32, 32)),
}


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image data set split into train and test; arrays may be read-only memory maps."""

    name: str
    classes: tuple[str, ...]
    train_x: np.ndarray  # (N, C, H, W) uint8
    train_y: np.ndarray  # (N,) int64
    test_x: np.ndarray  # (M, C, H, W) uint8
    test_y: np.ndarray  # (M,) int64

    @property
    def num_classes(self) -> int:
        """Number of classes, so models can size their output layer."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Colour channels (1 grey, 3 RGB), so models can size their input layer."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Image height in pixels (images are square in all built-in sets)."""
        return int(self.train_x.shape[2])

    @cached_property
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) of train_x scaled to [0, 1], computed in chunks to bound memory."""
        c = self.in_channels
        total = np.zeros(c)
        total_sq = np.zeros(c)
        for start in range(0, len(self.train_x), STATS_CHUNK):
            chunk = np.asarray(self.train_x[start : start + STATS_CHUNK], dtype=np.float64) / 255.0
            total += chunk.sum(axis=(0, 2, 3))
            total_sq += np.square(chunk).sum(axis=(0, 2, 3))
        n = max(1, len(self.train_x) * self.train_x.shape[2] * self.train_x.shape[3])
        mean = total / n
        std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean of train_x in [0, 1] units, for input normalisation."""
        return self.channel_stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation of train_x in [0, 1] units, for input normalisation."""
        return self.channel_stats[1]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    download: bool = True,
) -> ImageDataset:
    """Load a built-in data set by name, or a user image folder / tar by path, through the array cache."""
    cache = Path(cache_dir) if cache_dir is not None else sources.default_cache_dir()
    if name in DATASETS:
        ds_name = name
        source = sources.locate(name, data_dir, cache_dir=cache, download=download)
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise UserError(
                f"Unknown data set {name!r}: it is not one of {', '.join(DATASETS)} and no folder or archive "
                "exists at that path; pass a built-in name or a path to a train/<class>/ + test/<class>/ layout."
            )
        ds_name = imagefolder.dataset_name(path.resolve())
        source = sources.Source("image-folder", (path,), "path")
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{name}\n{source.fingerprint()}".encode()).hexdigest()[
        :16
    ]
    entry = cache / "arrays" / f"{_safe(ds_name)}-{key}"
    cached = _read_cache(entry)
    if cached is not None:
        log.info("%s: loaded decoded arrays from cache %s", ds_name, entry)
        return cached
    with _lock(entry):
        cached = _read_cache(entry)  # another process may have decoded it while we waited
        if cached is not None:
            return cached
        log.info("%s: decoding %s (%s), first load", ds_name, source.paths[0], source.origin)
        dataset = _decode(ds_name, source)
        _check(dataset, source)
        if _write_cache(entry, dataset):
            reread = _read_cache(entry)
            if reread is not None:
                return reread
    return dataset


def _safe(name: str) -> str:
    """Keep a cache folder name to safe characters."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "dataset"


def _decode(name: str, source: sources.Source) -> ImageDataset:
    """Decode a source into arrays, checking standard files against their published hashes."""
    kind, path = source.kind, source.paths[0]
    if kind == "idx":
        hashes = sources.IDX_SHA256[name]
        arrays = [
            formats.read_idx(p, hashes[stem])
            for p, stem in zip(source.paths, sources.IDX_STEMS, strict=True)
        ]
        for x, y, split in ((arrays[0], arrays[1], "train"), (arrays[2], arrays[3], "test")):
            formats.check_idx_pair(x, y, f"{name} {split} ({path.parent})", 10)
        tx, ty, sx, sy = arrays
        return ImageDataset(
            name, CLASSES[name], tx[:, None], ty.astype(np.int64), sx[:, None], sy.astype(np.int64)
        )
    if kind == "mnist-pickle":
        tx, ty, sx, sy = formats.read_mnist_pickle(path)
        _check_as_idx(name, path, (tx, ty, sx, sy))
        return ImageDataset(name, CLASSES[name], tx[:, None], ty, sx[:, None], sy)
    if kind == "cifar-batches":
        return ImageDataset(name, CLASSES["cifar10"], *formats.read_cifar_dir(path))
    if kind == "cifar-archive":
        actual = sources.md5_file(path)
        if actual != sources.CIFAR_ARCHIVE_MD5:
            raise UserError(
                f"{path} is not the published CIFAR-10 archive (MD5 {actual}, expected "
                f"{sources.CIFAR_ARCHIVE_MD5}); delete it and fetch it again."
            )
        return ImageDataset(name, CLASSES["cifar10"], *formats.read_cifar_tar(path))
    if kind == "image-folder":
        if name == "cifar10" and path.name == sources.CIFAR_JPEG_ARCHIVE:
            actual = _sha256_file(path)
            if actual != sources.CIFAR_JPEG_SHA256:
                raise UserError(
                    f"{path} is not the known CIFAR-10 JPEG archive (SHA-256 {actual}, expected "
                    f"{sources.CIFAR_JPEG_SHA256}); delete it and fetch it again."
                )
        classes, train, test = imagefolder.read_image_folder(path)
        return ImageDataset(name, classes, train.x, train.y, test.x, test.y)
    raise ValueError(f"unknown source kind {kind!r}")


def _check_as_idx(name: str, path: Path, arrays: tuple[np.ndarray, ...]) -> None:
    """Check data from a non-IDX copy against the IDX hashes by re-serialising it as IDX."""
    for arr, stem in zip(arrays, sources.IDX_STEMS, strict=True):
        actual = formats.sha256_hex(formats.idx_bytes(arr.astype(np.uint8)))
        expected = sources.IDX_SHA256[name][stem]
        if actual != expected:
            raise UserError(
                f"{path} does not reproduce {name}'s {stem} (SHA-256 {actual}, expected {expected}); "
                "reinstall the package or use the IDX files instead."
            )


def _check(ds: ImageDataset, source: sources.Source) -> None:
    """Refuse a decoded built-in set whose shape or classes differ from the published one."""
    if source.origin == "path":
        return
    n_train, n_test, chw = SHAPES[ds.name]
    got = (len(ds.train_x), len(ds.test_x), tuple(ds.train_x.shape[1:]))
    if got != (n_train, n_test, chw) or ds.classes != CLASSES[ds.name]:
        raise UserError(
            f"{source.paths[0]} holds {got[0]} train / {got[1]} test images of shape {got[2]} with classes "
            f"{list(ds.classes)}, not {ds.name}'s {n_train} / {n_test} of shape {chw}; use the official files."
        )


def _sha256_file(path: Path) -> str:
    """Hash a large file in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(sources.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_cache(entry: Path) -> ImageDataset | None:
    """Memory-map a complete cache entry (meta.json is written last), or return None."""
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = [
            np.asarray(np.load(entry / f"{a}.npy", mmap_mode="r", allow_pickle=False))
            for a in ARRAYS
        ]
        return ImageDataset(meta["name"], tuple(meta["classes"]), *arrays)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable cache entry %s (%s)", entry, exc)
        return None


def _write_cache(entry: Path, ds: ImageDataset) -> bool:
    """Write the arrays into a temporary folder and rename it into place, so readers never see half."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    except OSError as exc:
        log.warning(
            "cannot write the data cache in %s (%s); every load will decode again",
            entry.parent,
            exc,
        )
        return False
    try:
        for a in ARRAYS:
            np.save(tmp / f"{a}.npy", np.ascontiguousarray(getattr(ds, a)), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"name": ds.name, "classes": list(ds.classes)}))
        if entry.is_dir() and not (entry / "meta.json").is_file():
            shutil.rmtree(entry)  # a broken leftover; we hold the lock, so nobody is writing it
        os.replace(tmp, entry)
        return True
    except OSError as exc:
        if (entry / "meta.json").is_file():
            return True  # another process won the race with identical content
        log.warning("cannot write the data cache %s (%s); every load will decode again", entry, exc)
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _lock(entry: Path) -> Iterator[None]:
    """Hold an exclusive file lock per cache entry, so 30 peers starting at once decode only once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle = (entry.parent / f".{entry.name}.lock").open("a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
