"""Frame and mask preparation in numpy (spec 3): resize, pad, aggregate, crop back.

Shapes: frames (H0, W0, 3) uint8 RGB in, (1, 3, H, W) float32 in [0, 1] out; H, W multiples of the
model's pad divisor (ModelConfig.pad_multiple: 32 for S3, 16 for Cutie, CUTIE_DELTA 6.1).

Two ways to shrink a frame: the reader's (shorter side to `max_short_side`, rounded, bilinear with
antialias; the reference evaluation reader) and Cutie's internal resize (CUTIE_DELTA 6.3,
`max_internal_size`: sizes truncated, bilinear without antialias). Outputs are always brought back
to the frame's own size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from s3rt.errors import InputError, ShapeError

PAD_MULTIPLE = 32     # S3's pad divisor; a config's pad_multiple overrides it


@dataclass(frozen=True)
class FrameGeometry:
    """Original size, working (possibly shrunk) size, padded size and the centred pad amounts."""

    orig_hw: tuple[int, int]
    work_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    pad: tuple[int, int, int, int]      # top, bottom, left, right
    antialias: bool = True              # shrink like the reader (True) or like Cutie's internal resize

    @classmethod
    def for_frame(cls, orig_hw: tuple[int, int], max_short_side: int | None,
                  work_hw: tuple[int, int] | None = None, *, pad_multiple: int = PAD_MULTIPLE,
                  max_internal_size: int | None = None) -> "FrameGeometry":
        """max_internal_size (> 0) applies Cutie's internal resize rule instead of the reader's shrink."""
        h0, w0 = orig_hw
        internal = bool(max_internal_size and max_internal_size > 0)
        if work_hw is not None:
            work = tuple(work_hw)
        elif internal:
            work = internal_size(h0, w0, max_internal_size)
        else:
            work = working_size(h0, w0, max_short_side)
        (top, bottom), (left, right) = (_centred_pad(work[0], pad_multiple), _centred_pad(work[1], pad_multiple))
        return cls(orig_hw=(h0, w0), work_hw=work, padded_hw=(work[0] + top + bottom, work[1] + left + right),
                   pad=(top, bottom, left, right), antialias=not internal)

    @property
    def resized(self) -> bool:
        return self.work_hw != self.orig_hw


def working_size(h: int, w: int, max_short_side: int | None) -> tuple[int, int]:
    """Shrink so the shorter side is `max_short_side` (never enlarge), like the reference reader."""
    if max_short_side is None or min(h, w) <= max_short_side:
        return h, w
    if h < w:
        return max_short_side, int(round(w * max_short_side / h))
    return int(round(h * max_short_side / w)), max_short_side


def internal_size(h: int, w: int, max_internal_size: int) -> tuple[int, int]:
    """Cutie's internal resize (CUTIE_DELTA 6.3): shorter side m > S -> (int(h / m * S), int(w / m * S))."""
    m = min(h, w)
    if m <= max_internal_size:
        return h, w
    return int(h / m * max_internal_size), int(w / m * max_internal_size)


def _centred_pad(x: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    extra = math.ceil(x / multiple) * multiple - x
    return extra // 2, extra - extra // 2


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows i0, i1 and weight of i1 for a half-pixel bilinear resize (align_corners=False)."""
    scale = np.float32(n_in / n_out)                  # float32 source coordinates, as torch computes them
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def resize_bilinear(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, H, W) without antialias, as torch's interpolate(mode='bilinear',
    align_corners=False, antialias=False): Cutie's internal resize of frames."""
    (y0, y1, fy), (x0, x1, fx) = _bilinear_taps(img.shape[1], size_hw[0]), _bilinear_taps(img.shape[2], size_hw[1])
    rows = img[:, y0] * (1 - fy)[None, :, None] + img[:, y1] * fy[None, :, None]      # (C, h, W)
    return (rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx).astype(np.float32)       # (C, h, w)


def check_frame(frame: np.ndarray, *, name: str = "frame") -> np.ndarray:
    """Accept (H, W, 3) uint8 RGB (or float in [0,1]); refuse grayscale/RGBA with a clear error."""
    if not isinstance(frame, np.ndarray):
        raise InputError(f"{name}: expected a numpy array (H, W, 3), got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        kind = "grayscale" if frame.ndim == 2 else ("RGBA" if frame.ndim == 3 and frame.shape[2] == 4 else "")
        raise ShapeError(f"{name}: expected an RGB image of shape (H, W, 3), got {frame.shape}"
                         + (f" ({kind}); convert it to RGB first" if kind else ""))
    if frame.shape[0] < 16 or frame.shape[1] < 16:
        raise ShapeError(f"{name}: image {frame.shape[:2]} is too small (at least 16x16)")
    return frame


def check_rgb8(frame: object, *, name: str = "frame", stream_hw: tuple[int, int] | None = None) -> np.ndarray:
    """`check_frame` for uint8 RGB only (what streams and files deliver) and, with `stream_hw`,
    the size of the stream's earlier frames (the graphs and the memory hold one size)."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = f"{frame.dtype} array" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ShapeError(f"{name}: expected a uint8 RGB array (H, W, 3), got {got}")
    if stream_hw is not None and frame.ndim >= 2 and frame.shape[:2] != tuple(stream_hw):
        raise ShapeError(f"{name} is {frame.shape[0]}x{frame.shape[1]} but the stream's frames are "
                         f"{stream_hw[0]}x{stream_hw[1]}")
    return check_frame(frame, name=name)


def resize_index_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) integer index mask to size_hw -> int64 (ids are never blended)."""
    return np.asarray(Image.fromarray(mask.astype(np.int32), mode="I").resize(
        (size_hw[1], size_hw[0]), Image.NEAREST)).astype(np.int64)


def argmax_labels(probabilities: np.ndarray, labels: list[int], dtype: type = np.int64) -> np.ndarray:
    """(N+1, H, W) probabilities, background first -> (H, W) label image: channel k+1 -> labels[k], 0 elsewhere."""
    lut = np.array([0, *labels], dtype=dtype)
    return lut[np.argmax(probabilities, axis=0)]


def resize_float(img: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float (C, H, W) array, per channel (PIL 'F' mode)."""
    h, w = size_hw
    out = np.empty((img.shape[0], h, w), np.float32)
    for c in range(img.shape[0]):
        out[c] = np.asarray(Image.fromarray(np.ascontiguousarray(img[c], dtype=np.float32), mode="F")
                            .resize((w, h), Image.BILINEAR))
    return out


def prepare_image(frame: np.ndarray, geo: FrameGeometry, out: np.ndarray | None = None) -> np.ndarray:
    """(H0, W0, 3) uint8/float RGB -> padded (1, 3, H, W) float32 in [0, 1] (zeros in the padding)."""
    frame = check_frame(frame)
    if frame.shape[:2] != geo.orig_hw:
        raise ShapeError(f"frame size {frame.shape[:2]} differs from the stream's first frame {geo.orig_hw}; "
                         "all frames of one stream must have the same size (reset() for a new video)")
    chw = frame.transpose(2, 0, 1).astype(np.float32)
    if frame.dtype == np.uint8:
        chw /= 255.0
    if geo.resized:
        chw = resize_float(chw, geo.work_hw) if geo.antialias else resize_bilinear(chw, geo.work_hw)
    top, bottom, left, right = geo.pad
    if out is None:
        out = np.zeros((1, 3, *geo.padded_hw), np.float32)
    else:
        out.fill(0)
    out[0, :, top:top + geo.work_hw[0], left:left + geo.work_hw[1]] = chw
    return out


def prepare_index_mask(mask: np.ndarray, geo: FrameGeometry) -> np.ndarray:
    """(H0, W0) integer index mask -> padded (H, W) index mask at working size (nearest)."""
    if mask.ndim != 2:
        raise ShapeError(f"mask: expected a 2-D index mask (H, W), got shape {mask.shape}")
    if mask.shape != geo.orig_hw:
        raise ShapeError(f"mask size {mask.shape} differs from the frame size {geo.orig_hw}; "
                         "resize the mask to the frame (nearest neighbour) or pass --resize-masks")
    if geo.resized:
        mask = resize_index_mask(mask, geo.work_hw)
    top, bottom, left, right = geo.pad
    return np.pad(mask.astype(np.int64), ((top, bottom), (left, right)))


def aggregate_probabilities(planes: np.ndarray) -> np.ndarray:
    """Soft aggregation (spec 10.3/11.1) of object probability planes (N, H, W) -> (N+1, H, W)."""
    planes = planes.astype(np.float32)
    bg = np.prod(1 - planes, axis=0, keepdims=True)
    p = np.clip(np.concatenate([bg, planes], axis=0), 1e-7, 1 - 1e-7)
    logits = np.log(p / (1 - p))
    logits -= logits.max(axis=0, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)


def crop_probabilities(probs: np.ndarray, geo: FrameGeometry) -> np.ndarray:
    """Padded (C, H, W) -> (C, H0, W0): remove padding, bilinear back to the original size."""
    top, _, left, _ = geo.pad
    h, w = geo.work_hw
    out = probs[:, top:top + h, left:left + w]
    if geo.resized:
        out = resize_float(out, geo.orig_hw)
    return np.ascontiguousarray(out, dtype=np.float32)
