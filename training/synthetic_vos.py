"""Seeded synthetic VOS clips that ask for real tracking, not colour thresholding.

Each clip has K target objects and D distractors drawn from the same shape/texture family
(a distractor copies a target's colour and texture with a small jitter), over a textured
background that pans (camera motion). Shapes deform (radial outline whose lobes rotate and
breathe), move with bouncing velocity, occlude each other in a random depth order, and some
targets enter after frame 0. Only targets are in the masks (ids 1..K); a distractor in
front of a target hides it there (mask 0).

Built on the shared generator (s3rt.runtime.io.synthetic: background, shapes, rendering); this
module adds the clip recipe and the look-alike distractors. numpy only, float64 maths with
integer rounding at the end: same arguments, same bytes.
Frames (T, H, W, 3) uint8 RGB, masks (T, H, W) uint8 index masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s3rt.errors import ConfigError
from s3rt.runtime.io.synthetic import Shape, background, random_shape, render

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


def _distractor_of(rng: np.random.Generator, spec: ClipSpec, like: Shape) -> Shape:
    """Same look as `like` (colour within +-15, same texture), elsewhere, own motion, not in the mask."""
    s = random_shape(rng, spec.height, spec.width, spec.speed)
    s.colour = np.clip(like.colour + rng.uniform(-15, 15, 3), 0, 255)
    s.colour2 = np.clip(like.colour2 + rng.uniform(-15, 15, 3), 0, 255)
    s.texture, s.period = like.texture, like.period * rng.uniform(0.8, 1.25)
    s.radius = like.radius * rng.uniform(0.7, 1.3)
    return s


def generate_clip(spec: ClipSpec, seed: int, *, with_background: bool = False
                  ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> frames (T, H, W, 3) uint8, masks (T, H, W) uint8 (ids 1..K; entering targets 0 before),
    and with_background: the same frames with no shape drawn (T, H, W, 3), for checking masks.

    The shared generator's background and shapes, in this order from one seeded stream (the
    held-out clips the shipped weights were scored on depend on it): background, K targets,
    then D distractors each copying a random target's look."""
    spec.check()
    rng = np.random.default_rng(seed)
    bg = background(rng, spec.num_frames, spec.height, spec.width, spec.pan)
    targets = [random_shape(rng, spec.height, spec.width, spec.speed) for _ in range(spec.num_objects)]
    for k, s in enumerate(targets, start=1):
        s.label = k
    for j, e in enumerate(spec.enter_after):            # the last targets enter late
        targets[spec.num_objects - 1 - j].first = e
    distractors = [_distractor_of(rng, spec, targets[int(rng.integers(0, len(targets)))])
                   for _ in range(spec.num_distractors)]
    return render(targets + distractors, bg, spec.num_frames, spec.height, spec.width,
                  with_background=with_background)


def random_spec(rng: np.random.Generator, *, num_frames: int, height: int, width: int,
                max_objects: int = 3, max_distractors: int = 2) -> ClipSpec:
    """A training/evaluation mix: 1..max_objects targets, 0..max_distractors look-alikes."""
    k = int(rng.integers(1, max_objects + 1))
    return ClipSpec(num_frames=num_frames, height=height, width=width, num_objects=k,
                    num_distractors=int(rng.integers(0, max_distractors + 1)),
                    speed=float(rng.uniform(0.01, 0.05)), pan=float(rng.uniform(0.0, 1.0)))
