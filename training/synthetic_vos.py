"""Seeded synthetic VOS clips that ask for real tracking, not colour thresholding.

Each clip has K target objects and D distractors drawn from the same shape/texture family
(a distractor copies a target's colour and texture with a small jitter), over a textured
background that pans (camera motion). Shapes deform (radial outline whose lobes rotate and
breathe), move with bouncing velocity, occlude each other in a random depth order, and some
targets enter after frame 0. Only targets are in the masks (ids 1..K); a distractor in
front of a target hides it there (mask 0).

numpy only, float64 maths with integer rounding at the end: same arguments, same bytes.
Frames (T, H, W, 3) uint8 RGB, masks (T, H, W) uint8 index masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from s3rt.runtime.io.synthetic import _bounce   # one reflection rule for both clip generators

from s3rt.errors import ConfigError

MIN_SIDE = 32


@dataclass(frozen=True)
class ClipSpec:
    """What to generate; every field is part of the seed's meaning."""

    num_frames: int = 8
    height: int = 96
    width: int = 160
    num_objects: int = 2              # targets (ids 1..K)
    num_distractors: int = 1
    enter_after: tuple[int, ...] = ()  # frame at which target k (1-based, from the end) appears
    speed: float = 0.03               # mean speed as a fraction of the short side per frame
    pan: float = 0.5                  # background pan in pixels per frame (max per axis)

    def check(self) -> None:
        if self.num_frames < 1:
            raise ConfigError(f"num_frames must be >= 1, got {self.num_frames}")
        if min(self.height, self.width) < MIN_SIDE:
            raise ConfigError(f"frame size {self.height}x{self.width} too small: at least {MIN_SIDE}")
        if not 1 <= self.num_objects <= 32:
            raise ConfigError(f"num_objects must be in 1..32, got {self.num_objects}")
        if self.num_distractors < 0:
            raise ConfigError(f"num_distractors must be >= 0, got {self.num_distractors}")
        if len(self.enter_after) >= self.num_objects + (0 if self.enter_after else 1):
            raise ConfigError("at least one target must be present on frame 0")
        if any(not 0 < e < self.num_frames for e in self.enter_after):
            raise ConfigError(f"enter_after frames must be in 1..{self.num_frames - 1}, got {self.enter_after}")


@dataclass
class _Shape:
    cy: float
    cx: float
    radius: float
    aspect: float
    vy: float
    vx: float
    lobes: int
    lobe_amp: float
    phase: float
    spin: float               # lobe rotation, radians per frame
    breathe: float            # radius oscillation amplitude (fraction)
    colour: np.ndarray        # (3,) float64
    colour2: np.ndarray       # (3,) second texture colour
    texture: int              # 0 stripes, 1 checker, 2 rings
    period: float
    first: int = 0            # first frame it is drawn
    target: int = 0           # mask id, 0 for a distractor
    depth: float = field(default=0.0)




def _new_shape(rng: np.random.Generator, spec: ClipSpec) -> _Shape:
    side = min(spec.height, spec.width)
    radius = side * rng.uniform(0.10, 0.22)
    angle = rng.uniform(0, 2 * math.pi)
    speed = spec.speed * side * rng.uniform(0.5, 1.5)
    colour = rng.uniform(30, 225, 3)
    return _Shape(cy=rng.uniform(radius, spec.height - radius), cx=rng.uniform(radius, spec.width - radius),
                  radius=radius, aspect=rng.uniform(0.6, 1.6), vy=speed * math.sin(angle), vx=speed * math.cos(angle),
                  lobes=int(rng.integers(0, 6)), lobe_amp=rng.uniform(0.0, 0.3), phase=rng.uniform(0, 2 * math.pi),
                  spin=rng.uniform(-0.15, 0.15), breathe=rng.uniform(0.0, 0.15), colour=colour,
                  colour2=np.clip(colour + rng.uniform(-90, 90, 3), 0, 255), texture=int(rng.integers(0, 3)),
                  period=rng.uniform(4, 10), depth=rng.uniform())


def _distractor_of(rng: np.random.Generator, spec: ClipSpec, like: _Shape) -> _Shape:
    """Same look as `like` (colour within +-15, same texture), elsewhere, own motion."""
    s = _new_shape(rng, spec)
    s.colour = np.clip(like.colour + rng.uniform(-15, 15, 3), 0, 255)
    s.colour2 = np.clip(like.colour2 + rng.uniform(-15, 15, 3), 0, 255)
    s.texture, s.period = like.texture, like.period * rng.uniform(0.8, 1.25)
    s.radius = like.radius * rng.uniform(0.7, 1.3)
    return s


def _draw(shape: _Shape, t: int, spec: ClipSpec, gy: np.ndarray, gx: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray] | None:
    """Boolean inside-mask (H, W) and its texture colours (M, 3) at frame t."""
    h, w = spec.height, spec.width
    r = shape.radius * (1 + shape.breathe * math.sin(0.4 * t + shape.phase))
    cy = _bounce(shape.cy + shape.vy * t, 0.0, h - 1.0)
    cx = _bounce(shape.cx + shape.vx * t, 0.0, w - 1.0)
    ry, rx = r * math.sqrt(shape.aspect), r / math.sqrt(shape.aspect)
    reach = max(ry, rx) * (1 + shape.lobe_amp) + 1
    y0, y1 = max(0, int(cy - reach)), min(h, int(cy + reach) + 2)
    x0, x1 = max(0, int(cx - reach)), min(w, int(cx + reach) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    dy, dx = gy[y0:y1, x0:x1] - cy, gx[y0:y1, x0:x1] - cx
    theta = np.arctan2(dy / ry, dx / rx)
    outline = 1 + shape.lobe_amp * np.sin(shape.lobes * theta + shape.phase + shape.spin * t)
    inside = np.hypot(dy / ry, dx / rx) <= outline
    if not inside.any():
        return None
    u, v = dy[inside], dx[inside]
    if shape.texture == 0:
        wave = np.sin(2 * math.pi * (u + v) / shape.period)
    elif shape.texture == 1:
        wave = np.sign(np.sin(2 * math.pi * u / shape.period) * np.sin(2 * math.pi * v / shape.period))
    else:
        wave = np.sin(2 * math.pi * np.hypot(u, v) / shape.period)
    mix = (0.5 + 0.5 * wave)[:, None]
    colours = shape.colour * mix + shape.colour2 * (1 - mix)
    full = np.zeros((h, w), bool)
    full[y0:y1, x0:x1] = inside
    return full, colours


def _background(rng: np.random.Generator, spec: ClipSpec) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Panning texture larger than the frame: (H + 2m, W + 2m, 3) and (margin m, pan y, pan x)."""
    pan = rng.uniform(-spec.pan, spec.pan, 2)
    margin = int(math.ceil(abs(pan).max() * spec.num_frames)) + 2
    hh, ww = spec.height + 2 * margin, spec.width + 2 * margin
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64)
    base = np.zeros((hh, ww, 3))
    for ch in range(3):
        for _ in range(2):
            fy, fx = rng.uniform(0.02, 0.25, 2)
            py, px = rng.uniform(0, 2 * math.pi, 2)
            base[..., ch] += 30 * np.sin(fy * yy + py) * np.cos(fx * xx + px)
        base[..., ch] += rng.uniform(70, 180)
    base += rng.normal(0, 8, base.shape)
    return base, (float(margin), float(pan[0]), float(pan[1]))


def generate_clip(spec: ClipSpec, seed: int, *, with_background: bool = False
                  ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> frames (T, H, W, 3) uint8, masks (T, H, W) uint8 (ids 1..K; entering targets 0 before),
    and with_background: the same frames with no shape drawn (T, H, W, 3), for checking masks."""
    spec.check()
    rng = np.random.default_rng(seed)
    base, (margin, py, px) = _background(rng, spec)
    targets = [_new_shape(rng, spec) for _ in range(spec.num_objects)]
    for k, s in enumerate(targets, start=1):
        s.target = k
    for j, e in enumerate(spec.enter_after):            # the last targets enter late
        targets[spec.num_objects - 1 - j].first = e
    distractors = [_distractor_of(rng, spec, targets[int(rng.integers(0, len(targets)))])
                   for _ in range(spec.num_distractors)]
    shapes = sorted(targets + distractors, key=lambda s: s.depth)   # back to front
    gy, gx = np.mgrid[0:spec.height, 0:spec.width].astype(np.float64)
    frames = np.zeros((spec.num_frames, spec.height, spec.width, 3), np.uint8)
    masks = np.zeros((spec.num_frames, spec.height, spec.width), np.uint8)
    backgrounds = np.zeros_like(frames) if with_background else None
    m = int(margin)
    for t in range(spec.num_frames):
        oy, ox = m + int(round(py * t)), m + int(round(px * t))
        img = base[oy:oy + spec.height, ox:ox + spec.width].copy()
        if backgrounds is not None:
            backgrounds[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        mask = masks[t]
        for s in shapes:
            if t < s.first:
                continue
            drawn = _draw(s, t, spec, gy, gx)
            if drawn is None:
                continue
            inside, colours = drawn
            img[inside] = colours
            mask[inside] = s.target
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return (frames, masks, backgrounds) if backgrounds is not None else (frames, masks)


def random_spec(rng: np.random.Generator, *, num_frames: int, height: int, width: int,
                max_objects: int = 3, max_distractors: int = 2) -> ClipSpec:
    """A training/evaluation mix: 1..max_objects targets, 0..max_distractors look-alikes."""
    k = int(rng.integers(1, max_objects + 1))
    return ClipSpec(num_frames=num_frames, height=height, width=width, num_objects=k,
                    num_distractors=int(rng.integers(0, max_distractors + 1)),
                    speed=float(rng.uniform(0.01, 0.05)), pan=float(rng.uniform(0.0, 1.0)))
