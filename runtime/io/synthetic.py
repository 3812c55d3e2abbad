"""The one seeded synthetic clip generator: a panning textured background and textured shapes.

Every synthetic clip in s3rt comes from here: `s3rt bench` and the other benchmarks feed every
backend the same frames, the tests and TensorRT validation need a clip without downloading one,
batch-norm calibration of random weights needs plausible frames, and training
(`s3rt.training.synthetic_vos`) builds its look-alike distractors on top of these shapes.

Two levels:
- `make_clip` / `iter_clip`: the ready-made clip (K elliptic striped blobs moving over a panning
  background, every id visible on frame 0: blobs start in disjoint cells of a grid, each smaller
  than its cell, and bounce off the frame edges).
- `random_shape`, `background` and `render`: the parts, for callers that compose their own scene
  (deforming outlines, other textures, depth order, late entries, shapes outside the mask).

Torch-free, numpy only; the same arguments give the same bytes on every run and machine (float64
maths, integer rounding at the end). Frames are (H, W, 3) uint8 RGB; masks are (H, W) uint8 index
masks (0 = background, a shape's `label` where it is the front-most shape drawn there).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from s3rt.errors import ConfigError

MIN_SIDE = 16          # the tracker's smallest frame (s3rt.runtime.preprocess.check_frame)
MAX_OBJECTS = 255      # index masks are 8-bit palette PNGs
MAX_PAN_MARGIN = 128   # the background is at most this many pixels larger per side; a longer pan reflects
STRIPES, CHECKER, RINGS = 0, 1, 2


@dataclass
class Shape:
    """One moving, deforming, textured shape; where it is and what it looks like on frame t."""

    cy: float                 # centre on frame 0 (pixels)
    cx: float
    radius: float             # geometric mean of the two semi-axes
    aspect: float             # ry / rx
    vy: float                 # pixels per frame; positions reflect off the bounds
    vx: float
    colour: np.ndarray        # (3,) float64 in [0, 255]
    colour2: np.ndarray       # (3,) the texture's second colour
    texture: int = STRIPES    # STRIPES, CHECKER or RINGS
    period: float = 8.0       # texture period in pixels (the texture moves with the shape)
    lobes: int = 0            # radial outline r(theta) = 1 + lobe_amp * sin(lobes * theta + ...)
    lobe_amp: float = 0.0
    phase: float = 0.0
    spin: float = 0.0         # lobe rotation, radians per frame
    breathe: float = 0.0      # radius oscillation amplitude (fraction of the radius)
    first: int = 0            # first frame it is drawn
    label: int = 0            # mask id; 0: drawn but not in the mask (a distractor)
    depth: float = field(default=0.0)   # drawing order, back (small) to front
    keep_inside: bool = False  # bounce the outline (not just the centre) off the frame edges

    def draw(self, t: int, height: int, width: int, gy: np.ndarray, gx: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """Boolean inside-mask (H, W) and its texture colours (M, 3) at frame t; None when off-frame."""
        r = self.radius * (1 + self.breathe * math.sin(0.4 * t + self.phase))
        ry, rx = r * math.sqrt(self.aspect), r / math.sqrt(self.aspect)
        if self.keep_inside:      # bounds that hold the start position, so frame 0 is where it was placed
            cy = bounce(self.cy + self.vy * t, min(ry, self.cy), max(height - 1 - ry, self.cy))
            cx = bounce(self.cx + self.vx * t, min(rx, self.cx), max(width - 1 - rx, self.cx))
        else:
            cy = bounce(self.cy + self.vy * t, 0.0, height - 1.0)
            cx = bounce(self.cx + self.vx * t, 0.0, width - 1.0)
        reach = max(ry, rx) * (1 + self.lobe_amp) + 1
        y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 2)
        x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            return None
        dy, dx = gy[y0:y1, x0:x1] - cy, gx[y0:y1, x0:x1] - cx
        theta = np.arctan2(dy / ry, dx / rx)
        outline = 1 + self.lobe_amp * np.sin(self.lobes * theta + self.phase + self.spin * t)
        inside = np.hypot(dy / ry, dx / rx) <= outline
        if not inside.any():
            return None
        u, v = dy[inside], dx[inside]
        if self.texture == STRIPES:
            wave = np.sin(2 * math.pi * (u + v) / self.period)
        elif self.texture == CHECKER:
            wave = np.sign(np.sin(2 * math.pi * u / self.period) * np.sin(2 * math.pi * v / self.period))
        else:
            wave = np.sin(2 * math.pi * np.hypot(u, v) / self.period)
        mix = (0.5 + 0.5 * wave)[:, None]
        colours = self.colour * mix + self.colour2 * (1 - mix)
        full = np.zeros((height, width), bool)
        full[y0:y1, x0:x1] = inside
        return full, colours


@dataclass(frozen=True)
class Background:
    """A smooth texture larger than the frame, panned by (pan_y, pan_x) pixels per frame."""

    texture: np.ndarray       # (H + 2 margin, W + 2 margin, 3) float64
    margin: int
    pan_y: float
    pan_x: float

    def at(self, t: int, height: int, width: int) -> np.ndarray:
        """The (H, W, 3) float64 window of frame t (the pan reflects at the texture's edges)."""
        span = 2 * self.margin
        oy = _reflect(self.margin + int(round(self.pan_y * t)), span)
        ox = _reflect(self.margin + int(round(self.pan_x * t)), span)
        return self.texture[oy:oy + height, ox:ox + width].copy()


def bounce(x: float, lo: float, hi: float) -> float:
    """Position of a point moving freely, reflected into [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def _reflect(offset: int, span: int) -> int:
    """An integer offset reflected into [0, span] (identity inside it)."""
    if 0 <= offset <= span or span <= 0:
        return min(max(offset, 0), max(span, 0))
    y = offset % (2 * span)
    return y if y <= span else 2 * span - y


def background(rng: np.random.Generator, num_frames: int, height: int, width: int, pan: float) -> Background:
    """Two colour waves per channel on a random base level, fixed grain, a random pan of at most
    `pan` pixels per frame per axis (camera motion)."""
    pan_yx = rng.uniform(-pan, pan, 2)
    margin = min(int(math.ceil(abs(pan_yx).max() * num_frames)) + 2, MAX_PAN_MARGIN)
    hh, ww = height + 2 * margin, width + 2 * margin
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64)
    base = np.zeros((hh, ww, 3))
    for ch in range(3):
        for _ in range(2):
            fy, fx = rng.uniform(0.02, 0.25, 2)
            py, px = rng.uniform(0, 2 * math.pi, 2)
            base[..., ch] += 30 * np.sin(fy * yy + py) * np.cos(fx * xx + px)
        base[..., ch] += rng.uniform(70, 180)
    base += rng.normal(0, 8, base.shape)
    return Background(base, margin, float(pan_yx[0]), float(pan_yx[1]))


def random_shape(rng: np.random.Generator, height: int, width: int, speed: float) -> Shape:
    """A shape anywhere in the frame: radius 10-22 % of the short side, aspect 0.6-1.6, 0-5 lobes,
    any texture, a speed of 0.5-1.5 x `speed` (a fraction of the short side per frame)."""
    side = min(height, width)
    radius = side * rng.uniform(0.10, 0.22)
    angle = rng.uniform(0, 2 * math.pi)
    v = speed * side * rng.uniform(0.5, 1.5)
    colour = rng.uniform(30, 225, 3)
    return Shape(cy=rng.uniform(radius, height - radius), cx=rng.uniform(radius, width - radius),
                 radius=radius, aspect=rng.uniform(0.6, 1.6), vy=v * math.sin(angle), vx=v * math.cos(angle),
                 lobes=int(rng.integers(0, 6)), lobe_amp=rng.uniform(0.0, 0.3), phase=rng.uniform(0, 2 * math.pi),
                 spin=rng.uniform(-0.15, 0.15), breathe=rng.uniform(0.0, 0.15), colour=colour,
                 colour2=np.clip(colour + rng.uniform(-90, 90, 3), 0, 255), texture=int(rng.integers(0, 3)),
                 period=rng.uniform(4, 10), depth=rng.uniform())


def iter_render(shapes: Sequence[Shape], bg: Background, num_frames: int, height: int, width: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame: (frame (H, W, 3) uint8, mask (H, W) uint8, the background alone (H, W, 3) float64).

    Shapes are drawn back to front by `depth`; a front shape with label 0 hides the ones behind it
    in the mask too."""
    order = sorted(shapes, key=lambda s: s.depth)
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float64)
    for t in range(num_frames):
        img = bg.at(t, height, width)
        plain = img.copy()
        mask = np.zeros((height, width), np.uint8)
        for s in order:
            if t < s.first:
                continue
            drawn = s.draw(t, height, width, gy, gx)
            if drawn is None:
                continue
            inside, colours = drawn
            img[inside] = colours
            mask[inside] = s.label
        yield to_uint8(img), mask, plain


def render(shapes: Sequence[Shape], bg: Background, num_frames: int, height: int, width: int,
           *, with_background: bool = False
           ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> frames (T, H, W, 3) uint8, masks (T, H, W) uint8, and with_background: the same frames
    with no shape drawn (T, H, W, 3) uint8, for checking masks against pixels."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    masks = np.zeros((num_frames, height, width), np.uint8)
    plains = np.zeros_like(frames) if with_background else None
    for t, (frame, mask, plain) in enumerate(iter_render(shapes, bg, num_frames, height, width)):
        frames[t], masks[t] = frame, mask
        if plains is not None:
            plains[t] = to_uint8(plain)
    return (frames, masks, plains) if plains is not None else (frames, masks)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# -- the ready-made clip ---------------------------------------------------------------------------
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


def grid_blobs(rng: np.random.Generator, num_objects: int, height: int, width: int) -> list[Shape]:
    """Striped ellipses labelled 1..K, one per grid cell, each inside its cell on frame 0."""
    rows, cols = _grid(num_objects, height, width)
    ch, cw = height / rows, width / cols
    speed = 0.015 * min(height, width)
    blobs = []
    for k in range(num_objects):
        r, c = divmod(k, cols)
        # semi-axes below half a cell keep frame 0's blobs disjoint; at least 1.5 px so the pixel
        # holding the centre is always inside (every id visible on frame 0, even in a 16x16 frame)
        ry = max(1.5, ch * rng.uniform(0.25, 0.45))
        rx = max(1.5, cw * rng.uniform(0.25, 0.45))
        angle = rng.uniform(0, 2 * math.pi)
        colour = rng.uniform(40, 230, 3)
        blobs.append(Shape(cy=(r + 0.5) * ch, cx=(c + 0.5) * cw, radius=math.sqrt(ry * rx), aspect=ry / rx,
                           vy=speed * math.sin(angle), vx=speed * math.cos(angle), colour=colour,
                           colour2=0.6 * colour, texture=STRIPES, period=rng.uniform(4, 12),
                           label=k + 1, depth=float(k), keep_inside=True))
    return blobs


def iter_clip(num_frames: int, height: int, width: int, num_objects: int = 1,
              seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (frame, mask) pairs one at a time (for long clips that should not sit in memory)."""
    _check(num_frames, height, width, num_objects)
    rng = np.random.default_rng(seed)
    blobs = grid_blobs(rng, num_objects, height, width)
    bg = background(rng, num_frames, height, width, pan=0.5)
    for frame, mask, _ in iter_render(blobs, bg, num_frames, height, width):
        yield frame, mask


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


def first_frame_clip(num_frames: int, height: int, width: int, num_objects: int = 2,
                     seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """`make_clip`'s frames and only its first mask, as int64 (what a tracker is started from)."""
    frames, masks = make_clip(num_frames, height, width, num_objects, seed)
    return frames, masks[0].astype(np.int64)


__all__ = ["Background", "CHECKER", "MAX_OBJECTS", "MIN_SIDE", "RINGS", "STRIPES", "Shape", "background", "bounce",
           "first_frame_clip", "grid_blobs", "iter_clip", "iter_render", "make_clip", "random_shape", "render",
           "to_uint8"]
