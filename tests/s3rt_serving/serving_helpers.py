"""Helpers of the serving tests (importable by name: conftest modules are not)."""

from __future__ import annotations

import numpy as np

H, W = 64, 96          # multiples of 32: no padding; small enough for 4 streams x 300 frames on 2 cores


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
