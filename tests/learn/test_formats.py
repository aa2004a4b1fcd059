"""Readers for IDX, pickled CIFAR batches, mnist.pkl.gz and image folders, on tiny generated files."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedp2p.errors import UserError
from fedp2p.learn import formats, imagefolder

# -- helpers shared with the other learn tests -------------------------------------------


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False, code: int = 0x08) -> Path:
    """Write arr as an IDX file (optionally gzipped) and return its path."""
    dtype = np.dtype(formats.IDX_DTYPES[code])
    header = bytes([0, 0, code, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    data = header + np.asarray(arr, dtype=dtype).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def tiny_mnist(n_train: int = 6, n_test: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Make small random MNIST-shaped arrays: (images, labels) for train and test."""
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )


def write_idx_set(folder: Path, arrays: tuple[np.ndarray, ...], *, gz: bool = True) -> list[Path]:
    """Write the four standard IDX file names into folder."""
    from fedp2p.learn.sources import IDX_STEMS

    folder.mkdir(parents=True, exist_ok=True)
    return [write_idx(folder / stem, a, gz=gz) for stem, a in zip(IDX_STEMS, arrays, strict=True)]


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, list[int]]:
    """Pickle a CIFAR-style batch (protocol 2, bytes keys, like the official files)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b"batch_label": b"x", b"labels": labels, b"data": data, b"filenames": [b"a.png"] * n}
    return pickle.dumps(batch, protocol=2), data, labels


def write_cifar_dir(folder: Path, n: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny cifar-10-batches-py folder and return what each batch holds."""
    folder.mkdir(parents=True, exist_ok=True)
    content = {}
    for i, name in enumerate((*formats.CIFAR_TRAIN_BATCHES, formats.CIFAR_TEST_BATCH)):
        raw, data, labels = cifar_batch(n, seed=i)
        (folder / name).write_bytes(raw)
        content[name] = (data, labels)
    meta = {b"label_names": [c.encode() for c in formats.CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return content


def png_bytes(size: tuple[int, int], mode: str, value: int) -> bytes:
    """Encode a flat image as PNG bytes."""
    buf = io.BytesIO()
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 255 - value)).save(
        buf, "PNG"
    )
    return buf.getvalue()


def make_image_folder(root: Path, mode: str = "RGB", size: tuple[int, int] = (5, 4)) -> Path:
    """Write train/test splits with classes 'cat' and 'ant' (so sorted order differs from creation order)."""
    for split, count in (("train", 3), ("test", 2)):
        for c, cls in enumerate(("cat", "ant")):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (d / f"{i:02d}.png").write_bytes(png_bytes(size, mode, 10 * c + i))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    return root


def tar_folder(root: Path, archive: Path, prefix: str = "") -> Path:
    """Pack a folder's contents into a tar (gz when the name says so) under an optional prefix."""
    with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as tf:
        for path in sorted(root.rglob("*")):
            tf.add(path, arcname=prefix + path.relative_to(root).as_posix(), recursive=False)
    return archive


# -- IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", arr, gz=gz)

    got = formats.read_idx(path)

    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, arr)


def test_idx_big_endian_types_are_converted(tmp_path: Path) -> None:
    arr = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    path = write_idx(tmp_path / "ints", arr, code=0x0C)

    got = formats.read_idx(path)

    np.testing.assert_array_equal(got, arr)
    assert got.dtype.isnative


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_the_file(tmp_path: Path, gz: bool) -> None:
    data = formats.idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))[:-100]
    path = tmp_path / ("short.gz" if gz else "short")
    path.write_bytes(gzip.compress(data) if gz else data)

    with pytest.raises(UserError, match="truncated or corrupt") as info:
        formats.read_idx(path)

    assert str(path) in str(info.value)


def test_truncated_gzip_stream_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    noise = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    path.write_bytes(gzip.compress(formats.idx_bytes(noise))[:2000])

    with pytest.raises(UserError, match="damaged or truncated gzip") as info:
        formats.read_idx(path)

    assert str(path) in str(info.value)


def test_wrong_magic_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-idx"
    path.write_bytes(b"PK\x03\x04" + bytes(100))

    with pytest.raises(UserError, match="not an IDX file"):
        formats.read_idx(path)


def test_dims_that_disagree_with_length_are_refused_before_allocating(tmp_path: Path) -> None:
    # The header claims 2**32-1 images of 28x28, the body is tiny: must fail without a huge allocation.
    header = bytes([0, 0, 8, 3]) + (2**32 - 1).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = tmp_path / "liar"
    path.write_bytes(header + bytes(784))

    with pytest.raises(UserError, match="IDX header"):
        formats.read_idx(path)


def test_extra_trailing_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(formats.idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00")

    with pytest.raises(UserError, match="truncated or corrupt"):
        formats.read_idx(path)


def test_hash_mismatch_names_file_expected_and_actual(tmp_path: Path) -> None:
    arr = np.zeros((2, 2), np.uint8)
    path = write_idx(tmp_path / "x", arr, gz=True)
    actual = formats.sha256_hex(formats.idx_bytes(arr))

    with pytest.raises(UserError) as info:
        formats.read_idx(path, expected_sha256="ab" * 32)

    message = str(info.value)
    assert str(path) in message and "ab" * 32 in message and actual in message


def test_idx_pair_with_different_counts_is_refused() -> None:
    with pytest.raises(UserError, match="same split"):
        formats.check_idx_pair(np.zeros((3, 2, 2), np.uint8), np.zeros(2, np.uint8), "t", 10)


# -- pickles --------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))  # type: ignore[attr-defined]


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path: Path) -> None:
    evil = _Evil()
    evil.marker = tmp_path / "pwned"  # type: ignore[attr-defined]
    payload = pickle.dumps({b"data": evil}, protocol=2)

    with pytest.raises(UserError, match="Refused to load") as info:
        formats.safe_unpickle(payload, "evil.pkl")

    assert "system" in str(info.value)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"cbuiltins\neval\n(S'1+1'\ntR.",
        b"c__builtin__\n__import__\n(S'os'\ntR.",
        b"cnumpy\nload\n(S'x'\ntR.",
        b"c_codecs\nencode\n(Vx\nVzlib\ntR.",
    ],
)
def test_other_globals_are_refused(payload: bytes) -> None:
    with pytest.raises(UserError, match="Refused"):
        formats.safe_unpickle(payload, "bad.pkl")


def test_object_arrays_are_refused() -> None:
    payload = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)

    with pytest.raises(UserError, match="object dtype"):
        formats.safe_unpickle(payload, "obj.pkl")


def test_plain_numeric_arrays_unpickle() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)

    got = formats.safe_unpickle(pickle.dumps({b"a": [arr, b"x", 1]}, protocol=2), "ok.pkl")

    np.testing.assert_array_equal(got[b"a"][0], arr)


# -- CIFAR batches -----------------------------------------------------------------------------


def test_cifar_dir_is_read_in_batch_order(tmp_path: Path) -> None:
    content = write_cifar_dir(tmp_path / "cifar-10-batches-py")

    train_x, train_y, test_x, test_y = formats.read_cifar_dir(tmp_path / "cifar-10-batches-py")

    assert train_x.shape == (15, 3, 32, 32) and test_x.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(train_x[3:6].reshape(3, -1), content["data_batch_2"][0])
    assert train_y.tolist() == [v for b in formats.CIFAR_TRAIN_BATCHES for v in content[b][1]]
    assert test_y.tolist() == content["test_batch"][1] and test_y.dtype == np.int64


def test_cifar_tar_reads_without_extracting(tmp_path: Path) -> None:
    src = tmp_path / "src"
    content = write_cifar_dir(src / "cifar-10-batches-py")
    archive = tar_folder(src, tmp_path / "cifar.tar.gz")
    work = tmp_path / "work"
    work.mkdir()

    _, _, test_x, _ = formats.read_cifar_tar(archive)

    np.testing.assert_array_equal(test_x.reshape(3, -1), content["test_batch"][0])
    assert list(work.iterdir()) == []


def test_cifar_missing_batch_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_dir(folder)
    (folder / "data_batch_4").unlink()

    with pytest.raises(UserError, match="data_batch_4"):
        formats.read_cifar_dir(folder)


def test_truncated_cifar_tar_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_cifar_dir(src / "cifar-10-batches-py", n=40)
    archive = tar_folder(src, tmp_path / "cifar.tar.gz")
    archive.write_bytes(archive.read_bytes()[:5000])

    with pytest.raises(UserError, match="damaged or truncated"):
        formats.read_cifar_tar(archive)


def test_cifar_batch_with_wrong_row_size_is_refused() -> None:
    raw = pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2)

    with pytest.raises(UserError, match="3072"):
        formats.parse_cifar_batch(raw, "b")


# -- mnist.pkl.gz -------------------------------------------------------------------------------


def write_mnist_pickle(path: Path, arrays: tuple[np.ndarray, ...]) -> Path:
    """Write the classic mnist.pkl.gz layout: floats x/256, train split into 'train' + 'valid'."""
    tx, ty, sx, sy = arrays
    k = len(tx) - 2

    def f(x: np.ndarray) -> np.ndarray:
        return (x.reshape(len(x), 784) / 256.0).astype(np.float32)

    obj = (
        (f(tx[:k]), ty[:k].astype(np.int64)),
        (f(tx[k:]), ty[k:].astype(np.int64)),
        (f(sx), sy.astype(np.int64)),
    )
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=2)))
    return path


def test_mnist_pickle_gives_back_the_original_bytes(tmp_path: Path) -> None:
    arrays = tiny_mnist()
    path = write_mnist_pickle(tmp_path / "mnist.pkl.gz", arrays)

    got = formats.read_mnist_pickle(path)

    for a, b in zip(got, arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    assert got[0].dtype == np.uint8 and got[1].dtype == np.int64


# -- image folders --------------------------------------------------------------------------------


@pytest.mark.parametrize("packing", ["folder", "tar", "tar.gz", "tar.gz-with-root"])
def test_image_folder_layouts(tmp_path: Path, packing: str) -> None:
    root = make_image_folder(tmp_path / "imgs")
    path = {
        "folder": root,
        "tar": lambda: tar_folder(root, tmp_path / "imgs.tar"),
        "tar.gz": lambda: tar_folder(root, tmp_path / "imgs.tar.gz"),
        "tar.gz-with-root": lambda: tar_folder(root, tmp_path / "imgs.tar.gz", prefix="top/"),
    }[packing]
    path = path if isinstance(path, Path) else path()

    classes, train, test = imagefolder.read_image_folder(path)

    assert classes == ("ant", "cat")
    assert train.x.shape == (6, 3, 4, 5) and train.x.dtype == np.uint8
    assert train.y.tolist() == [0, 0, 0, 1, 1, 1] and test.y.tolist() == [0, 0, 1, 1]
    assert train.x[0, 0, 0, 0] == 10  # ant/00.png was drawn with value 10 * 1 + 0
    assert train.x[3, 0, 0, 0] == 0  # cat/00.png


def test_grey_images_get_one_channel(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "g", mode="L")

    _, train, _ = imagefolder.read_image_folder(root)

    assert train.x.shape == (6, 1, 4, 5)


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "m")
    (root / "test" / "cat" / "big.png").write_bytes(png_bytes((8, 8), "RGB", 1))

    with pytest.raises(UserError, match="differ in size or colour") as info:
        imagefolder.read_image_folder(root)

    assert "big.png" in str(info.value) and "8x8 RGB" in str(info.value)


def test_mixed_modes_are_refused(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "m")
    (root / "test" / "cat" / "grey.png").write_bytes(png_bytes((5, 4), "L", 1))

    with pytest.raises(UserError, match="5x4 L"):
        imagefolder.read_image_folder(root)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "c")
    (root / "train" / "ant" / "bad.png").write_bytes(b"\x89PNG not really")

    with pytest.raises(UserError, match=r"bad\.png"):
        imagefolder.read_image_folder(root)


def test_hostile_tar_members_are_ignored(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "h")
    archive = tar_folder(root, tmp_path / "h.tar")
    with tarfile.open(archive, "a") as tf:
        data = png_bytes((5, 4), "RGB", 3)
        for name in ("../train/ant/escape.png", "/train/evil/abs.png", "train/../../x/y.png"):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("train/ant/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)

    classes, train, _ = imagefolder.read_image_folder(archive)

    assert classes == ("ant", "cat")
    assert len(train.y) == 6
    assert not (tmp_path / "train").exists()


def test_test_class_missing_from_train_is_refused(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "t")
    (root / "test" / "dog").mkdir()
    (root / "test" / "dog" / "0.png").write_bytes(png_bytes((5, 4), "RGB", 0))

    with pytest.raises(UserError, match="dog"):
        imagefolder.read_image_folder(root)


def test_empty_folder_says_what_layout_is_expected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"train/<class>"):
        imagefolder.read_image_folder(tmp_path)
