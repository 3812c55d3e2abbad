"""How closely two runs of one clip agree (two backends, two precisions): per-frame figures."""

from __future__ import annotations

import numpy as np


def frame_agreement(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per frame: max |dp| and the fraction of pixels whose argmax agrees, for (C, H, W) probabilities."""
    diffs = [float(np.abs(x - y).max()) for x, y in zip(a, b)]
    agree = [float((x.argmax(0) == y.argmax(0)).mean()) for x, y in zip(a, b)]
    return diffs, agree
