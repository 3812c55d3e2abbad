"""Shared set-up of the ROS tests: frame size and topic (the model is conftest's `tiny_model`), the clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s3rt.runtime.io.synthetic import make_clip

from conftest import TINY_H as H, TINY_W as W

N_FRAMES = 8
TOPIC = "/camera/image_raw"


def clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    return make_clip(N_FRAMES, H, W, 2, seed=4)


def write_clip(root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The clip as PNG frames (root/frames/00000.png, ...) and its first index mask (root/first.png)."""
    from PIL import Image

    from s3rt.runtime.io.files import write_index_mask

    frames, masks = clip()
    (root / "frames").mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(root / "frames" / f"{i:05d}.png")
    write_index_mask(root / "first.png", masks[0], None)
    return frames, masks


def run_reference(model: Path, root: Path) -> list[np.ndarray]:
    """`s3rt run`'s masks for the clip written by `write_clip` (the reference of every ROS path)."""
    from PIL import Image

    from s3rt.cli.main import main

    assert main(["run", "--model", str(model), "--backend", "onnxruntime", "--threads", "1", "--frames",
                 str(root / "frames"), "--mask", str(root / "first.png"), "--out", str(root / "run"),
                 "--no-progress"]) == 0
    return [np.asarray(Image.open(root / "run" / f"{i:05d}.png")).astype(np.int64) for i in range(N_FRAMES)]
