"""ROS image messages <-> numpy, label images, per-object boxes and the timing record.

One module for every conversion the bag replay and the ROS 2 node need, written against the
*fields* of the messages (``height``, ``width``, ``encoding``, ``is_bigendian``, ``step``,
``data``; ``format`` for CompressedImage), so the same code reads rosbags' dataclasses and
rclpy's generated classes. Building messages (which classes, which array types) is
``s3rt.runtime.serving.ros.messages``'s job. numpy + Pillow only: no ROS, no torch.

Shapes: decoded images are (H, W, C) in the encoding's dtype; the tracker's frame is (H, W, 3)
uint8 RGB; label images are (H, W) with value = label (0 = background).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from s3rt.errors import RosMessageError


@dataclass(frozen=True)
class Encoding:
    """Pixel layout of one sensor_msgs/Image encoding."""

    name: str
    channels: int
    dtype: np.dtype

    @property
    def pixel_bytes(self) -> int:
        return self.channels * self.dtype.itemsize


# names as in sensor_msgs/image_encodings.hpp; 8UC1/16UC1 are the same layouts as mono8/mono16
ENCODINGS: dict[str, Encoding] = {e.name: e for e in (
    Encoding("rgb8", 3, np.dtype(np.uint8)), Encoding("bgr8", 3, np.dtype(np.uint8)),
    Encoding("rgba8", 4, np.dtype(np.uint8)), Encoding("bgra8", 4, np.dtype(np.uint8)),
    Encoding("mono8", 1, np.dtype(np.uint8)), Encoding("mono16", 1, np.dtype(np.uint16)),
    Encoding("8UC1", 1, np.dtype(np.uint8)), Encoding("16UC1", 1, np.dtype(np.uint16)),
)}
COMPRESSED_FORMATS = ("jpeg", "png")


def _encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise RosMessageError(f"unsupported image encoding '{name}'; supported: {', '.join(ENCODINGS)} "
                              f"(and CompressedImage {'/'.join(COMPRESSED_FORMATS)})") from None


def _as_bytes(data: Any) -> memoryview:
    """rosbags gives a uint8 ndarray, rclpy an array.array('B'); both expose the buffer protocol."""
    view = memoryview(data)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


# -- raw images ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageFields:
    """The payload fields of a sensor_msgs/Image (no header)."""

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


def decode_image(msg: Any) -> np.ndarray:
    """(H, W, C) array in the encoding's dtype from an Image-like message; row padding dropped."""
    enc = _encoding(str(msg.encoding))
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise RosMessageError(f"image is {h}x{w}: height and width must be positive")
    row = w * enc.pixel_bytes
    if step < row:
        raise RosMessageError(f"{enc.name} image {h}x{w}: step {step} is smaller than width x bytes per pixel "
                              f"= {w} x {enc.pixel_bytes} = {row}")
    data = _as_bytes(msg.data)
    if len(data) < step * h:
        raise RosMessageError(f"{enc.name} image {h}x{w}, step {step}: data has {len(data)} bytes, expected "
                              f"step x height = {step * h} (truncated message)")
    rows = np.frombuffer(data, np.uint8, count=step * h).reshape(h, step)[:, :row]   # (H, step) -> (H, W*B)
    dtype = enc.dtype.newbyteorder(">" if msg.is_bigendian else "<") if enc.dtype.itemsize > 1 else enc.dtype
    img = np.ascontiguousarray(rows).view(dtype).reshape(h, w, enc.channels)         # (H, W*B) -> (H, W, C)
    return img.astype(enc.dtype, copy=False)    # native byte order


def encode_image(img: np.ndarray, encoding: str, *, row_padding: int = 0, big_endian: bool = False) -> ImageFields:
    """ImageFields for an (H, W[, C]) array; `row_padding` extra bytes per row (as some drivers add)."""
    enc = _encoding(encoding)
    arr = img[..., None] if img.ndim == 2 else img
    if arr.ndim != 3 or arr.shape[2] != enc.channels or arr.dtype != enc.dtype:
        raise RosMessageError(f"{encoding} needs an (H, W{'' if enc.channels == 1 else f', {enc.channels}'}) "
                              f"{enc.dtype} array, got {img.shape} {img.dtype}")
    if row_padding < 0:
        raise RosMessageError(f"row_padding must be >= 0, got {row_padding}")
    h, w = arr.shape[:2]
    order = ">" if big_endian else "<"
    rows = np.ascontiguousarray(arr, dtype=enc.dtype.newbyteorder(order)).view(np.uint8).reshape(h, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((h, row_padding), np.uint8)], axis=1)   # (H, W*B + pad)
    return ImageFields(height=h, width=w, encoding=enc.name, is_bigendian=int(big_endian and enc.dtype.itemsize > 1),
                       step=rows.shape[1], data=rows.tobytes())


def to_rgb8(img: np.ndarray, encoding: str) -> np.ndarray:
    """The tracker's (H, W, 3) uint8 RGB from a decoded image (mono16 keeps its high byte)."""
    enc = _encoding(encoding)
    if enc.name == "rgb8":
        return img
    if enc.name == "bgr8":
        return np.ascontiguousarray(img[..., ::-1])
    if enc.name == "rgba8":
        return np.ascontiguousarray(img[..., :3])
    if enc.name == "bgra8":
        return np.ascontiguousarray(img[..., 2::-1])
    gray = img[..., 0] if enc.dtype == np.uint8 else (img[..., 0] >> 8).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def image_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/Image-like message."""
    return to_rgb8(decode_image(msg), str(msg.encoding))


# -- compressed images ---------------------------------------------------------------------------
def compressed_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a sensor_msgs/CompressedImage (jpeg or png).

    image_transport writes `format` as "jpeg", "png" or e.g. "bgr8; jpeg compressed bgr8"; the
    file itself is a standard JPEG/PNG, so the decoder's RGB is right whatever the source order.
    """
    fmt = str(msg.format).lower()
    if "compresseddepth" in fmt or not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise RosMessageError(f"unsupported CompressedImage format '{msg.format}'; supported: jpeg, png")
    try:
        with Image.open(io.BytesIO(bytes(_as_bytes(msg.data)))) as im:
            im.load()
            mode = im.mode
            if mode == "RGB":
                return np.asarray(im, np.uint8).copy()
            if mode in ("L", "RGBA", "LA", "P"):
                return np.asarray(im.convert("RGB"), np.uint8).copy()
            if mode in ("I;16", "I;16B", "I"):
                return to_rgb8(np.asarray(im).astype(np.uint16)[..., None], "mono16")
            raise RosMessageError(f"CompressedImage decodes to PIL mode '{mode}', expected RGB or grayscale")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RosMessageError(f"CompressedImage ({msg.format}): undecodable data ({exc})") from exc


def encode_compressed(rgb: np.ndarray, fmt: str = "png", *, quality: int = 95) -> bytes:
    """JPEG/PNG bytes of an (H, W, 3) uint8 RGB frame (for bags written by tests and tools)."""
    if fmt not in COMPRESSED_FORMATS:
        raise RosMessageError(f"unsupported compressed format '{fmt}'; supported: {', '.join(COMPRESSED_FORMATS)}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG" if fmt == "jpeg" else "PNG",
                              **({"quality": quality} if fmt == "jpeg" else {}))
    return buf.getvalue()


# -- label images and objects --------------------------------------------------------------------
def label_image(labels: np.ndarray, *, encoding: str | None = None) -> ImageFields:
    """mono8 label image (mono16 when a label exceeds 255, or when asked) from an (H, W) int mask."""
    top = int(labels.max(initial=0))
    if labels.min(initial=0) < 0 or top > 65535:
        raise RosMessageError(f"labels must be in 0..65535 for a mono16 label image, got {labels.min()}..{top}")
    enc = encoding or ("mono8" if top <= 255 else "mono16")
    if enc not in ("mono8", "mono16"):
        raise RosMessageError(f"label images are mono8 or mono16, got '{enc}'")
    if enc == "mono8" and top > 255:
        raise RosMessageError(f"label {top} does not fit a mono8 label image; use mono16")
    return encode_image(labels.astype(np.uint8 if enc == "mono8" else np.uint16), enc)


@dataclass(frozen=True)
class ObjectBox:
    """One visible object: its user id, label value, pixel area and box (pixel edges, x right, y down)."""

    object_id: str
    label: int
    area: int
    x0: int          # first column
    y0: int          # first row
    x1: int          # one past the last column
    y1: int          # one past the last row
    score: float = 1.0   # mean probability inside the mask when the session gives it

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0

    @property
    def size(self) -> tuple[int, int]:
        return self.x1 - self.x0, self.y1 - self.y0


def object_boxes(labels: np.ndarray, ids: Mapping[int, str],
                 scores: Mapping[int, float] | None = None) -> list[ObjectBox]:
    """Boxes of the labels in `ids` (label -> user id) that are visible in the (H, W) label image."""
    out = []
    for label, object_id in sorted(ids.items()):
        ys, xs = np.nonzero(labels == label)
        if ys.size == 0:
            continue          # not visible on this frame: no detection (the timing record counts it)
        out.append(ObjectBox(object_id=str(object_id), label=int(label), area=int(ys.size),
                             x0=int(xs.min()), y0=int(ys.min()), x1=int(xs.max()) + 1, y1=int(ys.max()) + 1,
                             score=float(scores.get(label, 1.0)) if scores else 1.0))
    return out


def box_mask(hw: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """(H, W) bool rectangle for a box prompt (x0, y0, x1, y1 in pixels, x1/y1 exclusive)."""
    h, w = hw
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, w)), max(0, min(x1, w))
    y0, y1 = max(0, min(y0, h)), max(0, min(y1, h))
    if x1 <= x0 or y1 <= y0:
        raise RosMessageError(f"box {tuple(box)} is empty inside the {h}x{w} frame")
    mask = np.zeros(hw, bool)
    mask[y0:y1, x0:x1] = True
    return mask


# -- timing --------------------------------------------------------------------------------------
def timing_json(record: Mapping[str, Any]) -> str:
    """The per-frame timing record as compact JSON (std_msgs/String data), keys sorted."""
    return json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in record.items()},
                      sort_keys=True, separators=(",", ":"))


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def split_ns(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) for builtin_interfaces/Time."""
    return divmod(int(ns), 1_000_000_000)
