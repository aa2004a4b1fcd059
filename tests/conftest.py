"""Shared fixtures: tiny generated data sets, and a private cache folder for every test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the user's cache, and none finds data through FEDP2P_DATA by accident."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("FEDP2P_DATA", raising=False)


def write_image_folder(
    root: Path, classes: int = 4, train: int = 40, test: int = 10, seed: int = 0
) -> Path:
    """An image-folder data set whose classes are easy to tell apart: a bright quadrant each, plus noise."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("test", test)):
        for k in range(classes):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (28, 28)).astype(np.uint8)
                r, c = divmod(k % 4, 2)
                img[r * 14 : r * 14 + 14, c * 14 : c * 14 + 14] += 180
                Image.fromarray(img, mode="L").save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class, 28x28 grey data set of 160 train and 40 test images."""
    return write_image_folder(tmp_path_factory.mktemp("tiny") / "tiny")
