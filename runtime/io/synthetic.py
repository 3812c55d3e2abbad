"""Deterministic synthetic clips: textured background, K moving elliptic blobs, exact masks.

Used where identical inputs matter more than realism: `s3rt bench` feeds every backend the
same frames, tests and the demo need a clip without downloading one. Torch-free, numpy only;
the same arguments give the same bytes on every run and machine (float64 maths, integer
rounding at the end).

Frames are (H, W, 3) uint8 RGB; masks are (H, W) uint8 index masks (0 = background, object
ids 1..K, a later id drawn over an earlier one). On frame 0 every object is visible: blobs
start in disjoint cells of a grid, each smaller than its cell.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from s3rt.errors import ConfigError

MIN_SIDE = 16          # the tracker's smallest frame (s3rt.runtime.preprocess.check_frame)
MAX_OBJECTS = 255      # index masks are 8-bit palette PNGs


@dataclass(frozen=True)
class _Blob:
    cy: float
    cx: float
    ry: float
    rx: float
    vy: float          # pixels per frame
    vx: float
    colour: np.ndarray  # (3,) float64 in [0, 255]
    stripe: float       # stripe period in pixels (texture that moves with the blob)


def _check(num_frames: int, height: int, width: int, num_objects: int) -> None:
    if num_frames < 1:
        raise ConfigError(f"num_frames must be >= 1, got {num_frames}")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ConfigError(f"frame size {height}x{width} is too small: at least {MIN_SIDE}x{MIN_SIDE}")
    if not 1 <= num_objects <= MAX_OBJECTS:
        raise ConfigError(f"num_objects must be in 1..{MAX_OBJECTS}, got {num_objects}")


def _grid(num_objects: int, height: int, width: int) -> tuple[int, int]:
    """Rows and columns of roughly square cells, enough for every object."""
    cols = max(1, round(math.sqrt(num_objects * width / height)))
    rows = math.ceil(num_objects / cols)
    return rows, cols


def _blobs(rng: np.random.Generator, num_objects: int, height: int, width: int) -> list[_Blob]:
    rows, cols = _grid(num_objects, height, width)
    ch, cw = height / rows, width / cols
    speed = 0.015 * min(height, width)
    blobs = []
    for k in range(num_objects):
        r, c = divmod(k, cols)
        # radii below half a cell keep frame 0's blobs disjoint, so every id is visible there
        ry = max(1.0, ch * rng.uniform(0.25, 0.45))
        rx = max(1.0, cw * rng.uniform(0.25, 0.45))
        angle = rng.uniform(0, 2 * math.pi)
        blobs.append(_Blob(cy=(r + 0.5) * ch, cx=(c + 0.5) * cw, ry=ry, rx=rx,
                           vy=speed * math.sin(angle), vx=speed * math.cos(angle),
                           colour=rng.uniform(40, 230, 3), stripe=rng.uniform(4, 12)))
    return blobs


def _bounce(x: float, lo: float, hi: float) -> float:
    """Position of a point moving freely, reflected into [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def iter_clip(num_frames: int, height: int, width: int, num_objects: int = 1,
              seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frame, mask) pairs one at a time (for long clips that should not sit in memory)."""
    _check(num_frames, height, width, num_objects)
    rng = np.random.default_rng(seed)
    blobs = _blobs(rng, num_objects, height, width)
    # background: smooth colour waves plus fixed grain, panning slowly (camera motion)
    pad = num_frames // 2 + 2
    yy, xx = np.mgrid[0:height + pad, 0:width + pad].astype(np.float64)
    base = np.zeros((height + pad, width + pad, 3))
    for ch in range(3):
        fy, fx = rng.uniform(0.01, 0.06, 2)
        py, px = rng.uniform(0, 2 * math.pi, 2)
        base[..., ch] = 110 + 45 * np.sin(fy * yy + py) * np.cos(fx * xx + px)
    base += rng.normal(0, 6, base.shape)
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
    for t in range(num_frames):
        off = t // 2
        img = base[off:off + height, off:off + width].copy()
        mask = np.zeros((height, width), np.uint8)
        for k, b in enumerate(blobs, start=1):
            cy = _bounce(b.cy + b.vy * t, b.ry, height - 1 - b.ry)
            cx = _bounce(b.cx + b.vx * t, b.rx, width - 1 - b.rx)
            if t == 0:       # start exactly in the cell (a radius may exceed the free margin)
                cy, cx = b.cy, b.cx
            dy, dx = gy - cy, gx - cx
            inside = (dy / b.ry) ** 2 + (dx / b.rx) ** 2 <= 1.0
            inside[min(height - 1, int(cy)), min(width - 1, int(cx))] = True   # never empty
            shade = 0.8 + 0.2 * np.sin(2 * math.pi * (dx + dy) / b.stripe)
            img[inside] = b.colour * shade[inside, None]
            mask[inside] = k
        yield np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def make_clip(num_frames: int, height: int, width: int, num_objects: int = 1,
              seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`num_frames` RGB uint8 frames (H, W, 3) and their uint8 index masks (H, W), ids 1..K.

    Deterministic in all arguments; masks[0] is the first-frame annotation (every id present).
    """
    frames, masks = [], []
    for frame, mask in iter_clip(num_frames, height, width, num_objects, seed):
        frames.append(frame)
        masks.append(mask)
    return frames, masks
