"""Image-folder data sets (`train/<class>/*.png`, `test/<class>/...`) read from a folder or a tar.

Tar members are read in memory, never extracted, so a hostile archive cannot write
anywhere; only regular files whose path looks like `[root/]split/class/file` count.
"""

from __future__ import annotations

import io
import logging
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedp2p.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
SPLITS = ("train", "test")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class Split:
    """One decoded split: images (N, C, H, W) uint8 and labels (N,) int64."""

    x: np.ndarray
    y: np.ndarray


def is_tar_path(path: Path) -> bool:
    """Say whether a path names a tar archive by its suffix."""
    return path.name.lower().endswith(TAR_SUFFIXES)


def dataset_name(path: Path) -> str:
    """Name a user data set after its folder or archive, without the archive suffixes."""
    name = path.name
    for suffix in TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _image_key(parts: tuple[str, ...]) -> tuple[str, str, str] | None:
    """Map a member path to (split, class, file), or None for anything that is not a split image."""
    if len(parts) < 3 or any(p in ("", ".", "..") for p in parts):
        return None
    split, cls, file = parts[-3:]
    if split not in SPLITS or file.startswith(".") or cls.startswith("."):
        return None
    if PurePosixPath(file).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return split, cls, file


def _walk_folder(root: Path) -> Iterator[tuple[tuple[str, str, str], str, bytes]]:
    """Yield ((split, class, file), display name, bytes) for every image under root/split/class/."""
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for file in sorted(cls_dir.iterdir()):
                key = _image_key((split, cls_dir.name, file.name))
                if key is not None and file.is_file():
                    yield key, str(file), file.read_bytes()


def _walk_tar(archive: Path) -> Iterator[tuple[tuple[str, str, str], str, bytes]]:
    """Yield the images in a tar the same way, reading members in memory and checking they share one root."""
    root: tuple[str, ...] | None = None
    try:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf:
                if not member.isfile() or member.name.startswith("/"):
                    continue  # links, devices and absolute names are never images of ours
                parts = PurePosixPath(member.name).parts
                parts = parts[1:] if parts[:1] == (".",) else parts
                key = _image_key(parts)
                if key is None:
                    continue
                if root is None:
                    root = parts[:-3]
                elif parts[:-3] != root:
                    raise UserError(
                        f"{archive} holds images under both {'/'.join(root) or '.'} and "
                        f"{'/'.join(parts[:-3]) or '.'}; pack one train/ and one test/ folder per archive."
                    )
                handle = tf.extractfile(member)
                if handle is not None:
                    yield key, f"{archive}:{member.name}", handle.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise UserError(
            f"{archive} is a damaged or truncated archive ({exc}); make or fetch it again."
        ) from exc


def _decode(data: bytes, where: str) -> np.ndarray:
    """Decode one image into an (H, W, C) uint8 array in L or RGB."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            mode = "L" if img.mode in GREY_MODES else "RGB"
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UserError(
            f"Cannot decode image {where} ({exc}); remove or replace that file."
        ) from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def read_image_folder(path: Path) -> tuple[tuple[str, ...], Split, Split]:
    """Decode an image-folder data set (folder or tar); labels follow the sorted train class names."""
    walker = _walk_tar(path) if is_tar_path(path) else _walk_folder(path)
    items = sorted(walker, key=lambda item: item[0])
    classes = tuple(sorted({cls for (split, cls, _), _, _ in items if split == "train"}))
    if not classes:
        raise UserError(
            f"Found no images under {path}/train/<class>/; lay the data out as train/<class>/*.png "
            "and test/<class>/*.png (a folder or a .tar/.tar.gz)."
        )
    stray = sorted({cls for (split, cls, _), _, _ in items if split == "test"} - set(classes))
    if stray:
        raise UserError(
            f"{path} has test classes {stray} that train/ lacks; give every test class a train folder."
        )
    label_of = {cls: i for i, cls in enumerate(classes)}
    first: tuple[str, tuple[int, ...]] | None = None
    arrays: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    for (split, cls, _), where, data in items:
        arr = _decode(data, where)
        if first is None:
            first = (where, arr.shape)
        elif arr.shape != first[1]:
            raise UserError(
                f"Images in {path} differ in size or colour: {first[0]} is {_describe(first[1])} but "
                f"{where} is {_describe(arr.shape)}; resize and convert them all to one size and mode."
            )
        arrays[split].append(arr)
        labels[split].append(label_of[cls])
    if not arrays["test"]:
        raise UserError(
            f"Found no images under {path}/test/<class>/; add a test split next to train/."
        )
    splits = [
        Split(
            np.stack(arrays[s]).transpose(0, 3, 1, 2).copy(), np.asarray(labels[s], dtype=np.int64)
        )
        for s in SPLITS
    ]
    return classes, splits[0], splits[1]


def _describe(shape: tuple[int, ...]) -> str:
    """Say an image shape as 'WxH L|RGB' for error messages."""
    h, w, c = shape
    return f"{w}x{h} {'L' if c == 1 else 'RGB'}"
