"""Shared set-up of the ROS tests: the tiny model exported once per module, the synthetic clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from s3rt.runtime.io.synthetic import make_clip

H, W, N_FRAMES = 64, 96, 8
TOPIC = "/camera/image_raw"


def export_tiny(out: Path) -> Path:
    """Tiny ONNX graphs at H x W (seed 2: random weights whose masks keep both objects for a while)."""
    pytest.importorskip("torch", reason="the export needs torch")
    from s3rt.export.onnx_export import export_model

    export_model("tiny", out_dir=out, height=H, width=W, max_objects=4, seed=2, check_parity=False)
    return out


def clip() -> tuple[list[np.ndarray], list[np.ndarray]]:
    return make_clip(N_FRAMES, H, W, 2, seed=4)
