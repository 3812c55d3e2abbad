"""Shared set-up of the ROS tests: frame size and topic (the model is conftest's `tiny_model`), the clip."""

from __future__ import annotations

import numpy as np

from s3rt.runtime.io.synthetic import make_clip

from conftest import TINY_H as H, TINY_W as W

N_FRAMES = 8
TOPIC = "/camera/image_raw"


def clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    return make_clip(N_FRAMES, H, W, 2, seed=4)
