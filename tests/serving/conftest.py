"""Serving fixtures: one tiny ONNX export per session, small frames, a moving-blob clip."""

from __future__ import annotations

import numpy as np
import pytest

H, W = 64, 96          # multiples of 32: no padding; small enough for 4 streams x 300 frames on 2 cores


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny-config export (random weights, seed 3) at 64x96, 4 objects, 3 object groups."""
    from s3rt.export.onnx_export import export_model
    out = tmp_path_factory.mktemp("tiny_serving")
    export_model("tiny", out_dir=out, height=H, width=W, max_objects=4, max_buckets=3, seed=3, check_parity=False)
    return out


def make_clip(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """n RGB frames (H, W, 3) uint8 with two moving discs, and the first frame's 2-object mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for t in range(n):
        img = np.full((H, W, 3), 80, np.uint8) + rng.integers(0, 25, (H, W, 3), dtype=np.uint8)
        cx = 25 + (t % 40)
        img[(yy - 22) ** 2 + (xx - cx) ** 2 < 110] = (220, 40, 40)
        img[(yy - 44) ** 2 + (xx - (70 - t % 30)) ** 2 < 80] = (40, 200, 60)
        frames.append(img)
    mask = np.zeros((H, W), np.int64)
    mask[(yy - 22) ** 2 + (xx - 25) ** 2 < 110] = 1
    mask[(yy - 44) ** 2 + (xx - 70) ** 2 < 80] = 2
    return frames, mask


@pytest.fixture(scope="session")
def backend(tiny_model):
    from s3rt.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    b = OnnxRuntimeBackend(tiny_model, threads=1)
    b.open()
    yield b
    b.close()


class SlowBackend:
    """Any backend with `delay_s` added to every graph call (an injected slow model)."""

    def __init__(self, inner, delay_s: float) -> None:
        from s3rt.runtime.backends.timing import TimedBackend
        self._timed = TimedBackend(inner)
        self.delay_s = delay_s

    def run(self, graph, inputs, outputs):
        import time
        time.sleep(self.delay_s)
        self._timed.run(graph, inputs, outputs)

    def open(self):
        self._timed.open()
        return self

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_timed", "delay_s"):
            raise AttributeError(name)
        return getattr(self._timed, name)
