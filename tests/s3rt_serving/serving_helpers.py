"""Helpers of the serving tests (importable by name: conftest modules are not)."""

from __future__ import annotations

import numpy as np

from s3rt.runtime.io.synthetic import first_frame_clip

from conftest import TINY_H as H, TINY_W as W     # the session's tiny export (tests/conftest.py)


def make_clip(n: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """n RGB frames (H, W, 3) uint8 of the shared synthetic clip, two objects, and the first frame's mask."""
    return first_frame_clip(n, H, W, num_objects=2, seed=seed)


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


def save_frames(folder, frames: list[np.ndarray]):
    """Frames as 00000.png, 00001.png, ... in a new folder (an `s3rt run` / `s3rt stream` input)."""
    from PIL import Image
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return folder
