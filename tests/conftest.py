"""Shared test fixtures: paths to ../shared (skipped with a reason when absent), small clips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S3RT_SHARED", REPO.parent / "shared"))
SPEC = SHARED / "spec"
JUDO = SHARED / "data" / "clips" / "images" / "judo"
JUDO_MASKS = SHARED / "data" / "clips" / "masks" / "judo"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (tests read ../shared at run time; set S3RT_SHARED to override)")
    return path


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return require(SPEC, "the shared state-dict manifests")


@pytest.fixture(scope="session")
def judo_clip() -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """The 16 judo frames shrunk to 120x214 and their masks (frames 0, 5, 8, 13) resized to match."""
    from PIL import Image
    require(JUDO, "the judo clip")
    size = (214, 120)
    frames = [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BILINEAR)) for p in sorted(JUDO.glob("*.jpg"))]
    masks = {int(p.stem): np.asarray(Image.open(p).resize(size, Image.NEAREST)).astype(np.int64)
             for p in sorted(JUDO_MASKS.glob("*.png"))}
    return frames, masks


@pytest.fixture(scope="session")
def blob_clip() -> tuple[list[np.ndarray], np.ndarray]:
    """A tiny deterministic clip (6 frames, 60x100, not multiples of 32) and a 2-object mask."""
    rng = np.random.default_rng(0)
    h, w = 60, 100
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(6):
        img = np.full((h, w, 3), 90, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        img[(yy - 20) ** 2 + (xx - 25 - 3 * t) ** 2 < 120] = (220, 40, 40)
        img[(yy - 40) ** 2 + (xx - 70 + 2 * t) ** 2 < 90] = (40, 200, 60)
        frames.append(img)
    mask = np.zeros((h, w), np.int64)
    mask[(yy - 20) ** 2 + (xx - 25) ** 2 < 120] = 1
    mask[(yy - 40) ** 2 + (xx - 70) ** 2 < 90] = 2
    return frames, mask


@pytest.fixture(scope="session")
def ros_tiny_model(tmp_path_factory) -> Path:
    """The ROS tests' tiny ONNX model (tests/ros_helpers.py), exported once for all their modules."""
    from ros_helpers import export_tiny

    return export_tiny(tmp_path_factory.mktemp("tiny_ros"))
