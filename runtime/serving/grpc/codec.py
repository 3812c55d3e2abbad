"""Images and messages on the wire <-> numpy arrays and the serving core's dataclasses.

Used by both the server and the client, so each conversion is written once. Decoding refuses bad
input with InputError (undecodable, unknown encoding) or ShapeError (size does not match the
declared shape); the server turns those into a FrameError for that frame and the stream goes on.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from s3rt.errors import InputError, ShapeError
from s3rt.runtime.serving.messages import (ControlReply, Dropped, DropReason, FrameFailed, ObjectId, ObjectStat,
                                           Output, Result, Timing)
from s3rt.runtime.serving.grpc.stubs import load

pb, _ = load()

FRAME_ENCODINGS = ("rgb8", "bgr8", "mono8", "jpeg", "png")
MASK_ENCODINGS = ("mono8", "mono16", "png")
_NAMES = {"rgb8": pb.ENCODING_RGB8, "bgr8": pb.ENCODING_BGR8, "mono8": pb.ENCODING_MONO8, "mono16": pb.ENCODING_MONO16,
          "jpeg": pb.ENCODING_JPEG, "png": pb.ENCODING_PNG}
_CHANNELS = {pb.ENCODING_RGB8: 3, pb.ENCODING_BGR8: 3, pb.ENCODING_MONO8: 1}


def encoding_name(value: int) -> str:
    for k, v in _NAMES.items():
        if v == value:
            return k
    return f"unknown({value})"


# -- frames ---------------------------------------------------------------------------------------
def encode_frame(frame: np.ndarray, encoding: str = "rgb8", *, quality: int = 90) -> Any:
    """(H, W, 3) uint8 RGB -> Image message (raw rgb8/bgr8, or jpeg/png bytes)."""
    frame = np.ascontiguousarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ShapeError(f"frame: expected (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
    h, w = frame.shape[:2]
    if encoding == "rgb8":
        data = frame.tobytes()
    elif encoding == "bgr8":
        data = np.ascontiguousarray(frame[..., ::-1]).tobytes()
    elif encoding in ("jpeg", "png"):
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format=encoding.upper(), **({"quality": quality} if encoding == "jpeg" else {}))
        data = buf.getvalue()
    else:
        raise InputError(f"unknown frame encoding '{encoding}'; one of {', '.join(FRAME_ENCODINGS)}")
    return pb.Image(data=data, height=h, width=w, encoding=_NAMES[encoding])


def decode_frame(img: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Image message -> (H, W, 3) uint8 RGB. Images above `max_pixels` are refused before decoding."""
    enc = img.encoding
    if enc in _CHANNELS:
        c = _CHANNELS[enc]
        arr = _raw(img, np.uint8, c, max_pixels)
        if enc == pb.ENCODING_BGR8:
            arr = arr[..., ::-1]
        elif enc == pb.ENCODING_MONO8:
            arr = np.repeat(arr, 3, axis=2)
        return np.ascontiguousarray(arr)
    if enc in (pb.ENCODING_JPEG, pb.ENCODING_PNG):
        pil = _open_compressed(img, max_pixels)
        if pil.mode not in ("RGB", "L"):
            raise InputError(f"{encoding_name(enc)} frame is '{pil.mode}' mode; send RGB or greyscale")
        arr = np.asarray(pil.convert("RGB"))
        _check_declared(img, arr.shape[:2])
        return arr
    raise InputError(f"frame encoding {encoding_name(enc)} is not a frame encoding; use one of "
                     f"{', '.join(FRAME_ENCODINGS)}")


# -- masks and label images -------------------------------------------------------------------------
def encode_mask(mask: np.ndarray, encoding: str | None = None) -> Any:
    """(H, W) integer index mask -> Image (mono8 if it fits, else mono16; or png)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ShapeError(f"mask: expected a 2-D integer index mask, got {mask.dtype} {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise InputError("mask values must be in 0..65535")
    encoding = encoding or ("mono8" if mask.max(initial=0) <= 255 else "mono16")
    h, w = mask.shape
    if encoding == "mono8":
        if mask.max(initial=0) > 255:
            raise InputError("mask values above 255 need mono16")
        return pb.Image(data=mask.astype(np.uint8).tobytes(), height=h, width=w, encoding=pb.ENCODING_MONO8)
    if encoding == "mono16":
        return pb.Image(data=mask.astype("<u2").tobytes(), height=h, width=w, encoding=pb.ENCODING_MONO16)
    if encoding == "png":
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8 if mask.max(initial=0) <= 255 else np.uint16)).save(buf, format="PNG")
        return pb.Image(data=buf.getvalue(), height=h, width=w, encoding=pb.ENCODING_PNG)
    raise InputError(f"unknown mask encoding '{encoding}'; one of {', '.join(MASK_ENCODINGS)}")


def decode_mask(img: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Image -> (H, W) uint8 or uint16 index mask (kept narrow: masks may wait in a stream's inbox)."""
    if img.encoding == pb.ENCODING_MONO8:
        return _raw(img, np.uint8, 1, max_pixels)[..., 0]
    if img.encoding == pb.ENCODING_MONO16:
        return _raw(img, np.dtype("<u2"), 1, max_pixels)[..., 0].astype(np.uint16)
    if img.encoding == pb.ENCODING_PNG:
        pil = _open_compressed(img, max_pixels)
        if pil.mode not in ("P", "L", "I", "I;16"):
            raise InputError(f"png mask is '{pil.mode}' mode; send an 8-bit index (P/L) or 16-bit greyscale PNG")
        arr = np.asarray(pil)
        _check_declared(img, arr.shape)
        if arr.dtype.itemsize > 2 and arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(f"png mask values must be 0..65535, got {arr.min()}..{arr.max()}")
        return arr.astype(np.uint16 if arr.dtype.itemsize > 1 else np.uint8)
    raise InputError(f"mask encoding {encoding_name(img.encoding)} is not a mask encoding; use one of "
                     f"{', '.join(MASK_ENCODINGS)}")


def _raw(img: Any, dtype: Any, channels: int, max_pixels: int | None) -> np.ndarray:
    h, w = int(img.height), int(img.width)
    if h <= 0 or w <= 0:
        raise ShapeError(f"{encoding_name(img.encoding)} image needs height and width, got {h}x{w}")
    _check_pixels(img, h, w, max_pixels)
    itemsize = np.dtype(dtype).itemsize
    want = h * w * channels * itemsize
    data = img.data                    # one access: each one copies the bytes out of the message
    if len(data) != want:
        raise ShapeError(f"{encoding_name(img.encoding)} {h}x{w} needs {want} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(h, w, channels)


def _check_pixels(img: Any, h: int, w: int, max_pixels: int | None) -> None:
    if max_pixels is not None and h * w > max_pixels:
        raise InputError(f"{encoding_name(img.encoding)} image of {h}x{w} = {h * w / 1e6:.1f} Mpx exceeds the "
                         f"server's limit of {max_pixels / 1e6:.1f} Mpx (s3rt serve --max-image-mpx)")


def _open_compressed(img: Any, max_pixels: int | None) -> Any:
    """Open, check the header (format = declared encoding, size within `max_pixels`), then decode.

    Decoding happens only after the header's dimensions passed: a 151 KB PNG can declare 4800x8000.
    Messages never carry the decoder's text (it holds Python reprs such as object addresses).
    """
    from PIL import Image, UnidentifiedImageError
    declared = encoding_name(img.encoding)
    data = img.data
    what = f"the {declared} image ({len(data)} bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)     # our own limit decides
            pil = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    except Image.DecompressionBombError:
        raise InputError(f"{what} declares more pixels than the decoder allows; send a smaller image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot decode {what}: not a PNG or JPEG file ({type(exc).__name__})") from None
    if pil.format.lower() != declared:
        raise InputError(f"{what} is declared {declared} but the data is {pil.format}; declare its real encoding")
    w, h = pil.size
    _check_pixels(img, h, w, max_pixels)
    try:
        pil.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as exc:
        raise InputError(f"cannot decode {what} ({type(exc).__name__})") from None
    return pil


def _check_declared(img: Any, hw: tuple[int, int]) -> None:
    if (img.height or img.width) and (int(img.height), int(img.width)) != tuple(hw):
        raise ShapeError(f"declared {img.height}x{img.width} but the {encoding_name(img.encoding)} data is "
                         f"{hw[0]}x{hw[1]}")


# -- ids ------------------------------------------------------------------------------------------
def object_id_to_pb(obj: ObjectId) -> Any:
    return pb.ObjectId(name=obj) if isinstance(obj, str) else pb.ObjectId(number=int(obj))


def object_id_from_pb(msg: Any) -> ObjectId:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise InputError("object id not set (give name or number)")
    return msg.name if kind == "name" else int(msg.number)


# -- outputs --------------------------------------------------------------------------------------
def result_to_pb(r: Result) -> Any:
    labels = r.labels
    enc = pb.ENCODING_MONO8 if labels.dtype == np.uint8 else pb.ENCODING_MONO16
    data = labels.tobytes() if enc == pb.ENCODING_MONO8 else labels.astype("<u2").tobytes()
    objs = [pb.ObjectResult(id=object_id_to_pb(o.id), label=o.label, area=o.area, visible=o.visible,
                            box=pb.Box(x0=o.box[0], y0=o.box[1], x1=o.box[2], y1=o.box[3]) if o.box else None)
            for o in r.objects]
    return pb.FrameResult(seq=r.seq, capture_ts=r.capture_ts,
                          labels=pb.Image(data=data, height=labels.shape[0], width=labels.shape[1], encoding=enc),
                          objects=objs, frame_index=r.frame_index, memory_written=r.memory_written,
                          request_id=r.request_id or 0,
                          timing=pb.Timing(queue_ms=r.timing.queue_ms, inference_ms=r.timing.inference_ms,
                                           encode_ms=r.timing.encode_ms))


def result_from_pb(m: Any) -> Result:
    labels = _raw(m.labels, np.uint8 if m.labels.encoding == pb.ENCODING_MONO8 else np.dtype("<u2"), 1, None)[..., 0]
    objs = tuple(ObjectStat(id=object_id_from_pb(o.id), label=o.label, area=int(o.area),
                            box=(o.box.x0, o.box.y0, o.box.x1, o.box.y1) if o.visible else None) for o in m.objects)
    return Result(seq=int(m.seq), capture_ts=m.capture_ts, labels=labels, objects=objs,
                  timing=Timing(m.timing.queue_ms, m.timing.inference_ms, m.timing.encode_ms),
                  frame_index=int(m.frame_index), memory_written=m.memory_written, request_id=int(m.request_id) or None)


def output_to_pb(out: Output) -> Any:
    """A core output -> StreamResponse."""
    if isinstance(out, Result):
        return pb.StreamResponse(result=result_to_pb(out))
    if isinstance(out, Dropped):
        return pb.StreamResponse(dropped=pb.FrameDropped(seq=out.seq, capture_ts=out.capture_ts,
                                                         reason=out.reason.value, detail=out.detail))
    if isinstance(out, FrameFailed):
        return pb.StreamResponse(error=pb.FrameError(seq=out.seq, capture_ts=out.capture_ts, error=out.error,
                                                     message=out.message))
    labels = [pb.LabelEntry(id=object_id_to_pb(k), label=v) for k, v in out.labels.items()]
    return pb.StreamResponse(control=pb.ControlReply(
        op=out.op, request_id=out.request_id or 0, ok=out.ok, labels=labels, error=out.error, message=out.message,
        result=result_to_pb(out.result) if out.result is not None else None))


def output_from_pb(m: Any) -> Output | None:
    """StreamResponse -> core output (None for `opened`)."""
    kind = m.WhichOneof("kind")
    if kind == "result":
        return result_from_pb(m.result)
    if kind == "dropped":
        d = m.dropped
        return Dropped(seq=int(d.seq), capture_ts=d.capture_ts, reason=DropReason(d.reason), detail=d.detail)
    if kind == "error":
        e = m.error
        return FrameFailed(seq=int(e.seq), capture_ts=e.capture_ts, error=e.error, message=e.message)
    if kind == "control":
        c = m.control
        return ControlReply(op=c.op, request_id=int(c.request_id) or None, ok=c.ok,
                            labels={object_id_from_pb(e.id): e.label for e in c.labels}, error=c.error,
                            message=c.message, result=result_from_pb(c.result) if c.HasField("result") else None)
    return None
