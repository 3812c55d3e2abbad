"""Video files and cameras in, overlay videos out (PyAV and OpenCV, both optional and lazy).

- `open_video(path)`: decode a file with PyAV to RGB uint8 frames named 00000, 00001, ...
- `open_camera(index)`: read an OpenCV camera (BGR converted to RGB), until `max_frames`.
- `VideoOverlayWriter`: H.264 mp4 (libx264; MPEG-4 part 2 where this FFmpeg has no libx264) of
  each frame blended 50 % with its objects' palette colours, plus a one-pixel contour.
- `iter_dataset(root, split)`: the sequences of a DAVIS-layout folder (defined in
  s3rt.runtime.io.dataset, which also runs them; listed here with the other inputs).

Torch-free. PyAV (`av`) and OpenCV (`cv2`) come with the 'video' extra; without them the
functions raise MissingDependencyError (through s3rt.optional) when called, not on import.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from s3rt.errors import InputError, ShapeError, StateError
from s3rt.optional import av as av_mod
from s3rt.optional import cv2 as cv2_mod
from s3rt.runtime.io.dataset import iter_dataset
from s3rt.runtime.io.files import Frame, davis_palette
from s3rt.runtime.io.sources import FrameSource

__all__ = ["VideoOverlayWriter", "draw_overlay", "iter_dataset", "open_camera", "open_video", "palette_lut"]

log = logging.getLogger(__name__)

DEFAULT_FPS = 24.0


def _frame_name(i: int) -> str:
    return f"{i:05d}"


def _av_errors(av: object) -> tuple[type[BaseException], ...]:
    return (av.error.FFmpegError, OSError, ValueError)  # type: ignore[attr-defined]


# -- reading ---------------------------------------------------------------------------------------
def open_video(path: str | Path, max_frames: int | None = None) -> FrameSource:
    """A video file as a FrameSource: RGB uint8 (H, W, 3) frames, fps of the stream, count if known.

    The file is opened and its first frame decoded here, so a missing, corrupt or audio-only
    file fails now (InputError) rather than halfway through a run.
    """
    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    if not path.is_file():
        raise InputError(f"video file not found: {path}")
    av = av_mod.load()
    errors = _av_errors(av)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream (streams: "
                                 f"{', '.join(s.type for s in container.streams) or 'none'})")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FPS
            count = int(stream.frames) or None          # 0: the container does not say
            first = next(iter(container.decode(stream)), None)
    except errors as exc:
        raise InputError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
    if first is None:
        raise InputError(f"{path}: the video stream has no decodable frame")
    if count is not None and max_frames is not None:
        count = min(count, max_frames)

    def frames() -> Iterator[Frame]:
        # packets are decoded one by one so a corrupt packet becomes one error record and decoding
        # goes on with the next; a broken container (demuxing fails) ends the stream with a record
        i = 0
        try:
            container = av.open(str(path))
        except errors as exc:
            raise InputError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from exc
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"                 # frame + slice threads in the decoder
            packets = container.demux(stream)
            while max_frames is None or i < max_frames:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except errors as exc:
                    yield Frame(_frame_name(i), None, error=f"{path}: demuxing failed after {i} frames "
                                f"({type(exc).__name__}: {exc}); the rest of the file is unreadable")
                    return
                try:
                    decoded = [f.to_ndarray(format="rgb24") for f in packet.decode()]
                except errors as exc:
                    yield Frame(_frame_name(i), None, error=f"{path}: undecodable packet after {i} frames "
                                f"({type(exc).__name__}: {exc})")
                    i += 1
                    continue
                for image in decoded:
                    if max_frames is not None and i >= max_frames:
                        return
                    yield Frame(_frame_name(i), image)
                    i += 1

    log.debug("%s: %s fps, %s frames", path, fps, count if count is not None else "unknown")
    return FrameSource(frames, count, fps)


def open_camera(index: int, max_frames: int | None = None) -> FrameSource:
    """An OpenCV camera as a FrameSource (RGB frames); stops after `max_frames` or when the camera does.

    `count` is `max_frames` (None without it: the stream lasts until the camera stops or Ctrl-C).
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    cv2 = cv2_mod.load()
    cap = cv2.VideoCapture(int(index))
    if not cap.isOpened():
        cap.release()
        raise InputError(f"camera {index} cannot be opened (no such device, in use, or no permission); "
                         "check the device (e.g. ls /dev/video*) and pass another --camera index")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not 0 < fps <= 1000:
        fps = 30.0
    held = [cap]      # the capture opened for the check serves the first pass over the frames

    def frames() -> Iterator[Frame]:
        cap = held.pop() if held else cv2.VideoCapture(int(index))
        try:
            if not cap.isOpened():
                raise InputError(f"camera {index} cannot be opened again")
            i = 0
            while max_frames is None or i < max_frames:
                ok, image = cap.read()
                if not ok or image is None:
                    if i == 0:
                        raise InputError(f"camera {index} opened but delivered no frame")
                    log.info("camera %s stopped after %d frames", index, i)
                    break
                yield Frame(_frame_name(i), _camera_rgb(cv2, image))
                i += 1
        finally:
            cap.release()

    return FrameSource(frames, max_frames, fps)


def _camera_rgb(cv2: object, image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)  # type: ignore[attr-defined]
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)  # type: ignore[attr-defined]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # type: ignore[attr-defined]


# -- overlays --------------------------------------------------------------------------------------
def palette_lut(palette: list[int] | None) -> np.ndarray:
    """(256, 3) uint8 colours from a flat PIL palette (missing entries from the DAVIS palette)."""
    full = np.array(davis_palette(), np.uint8).reshape(256, 3)
    if palette:
        given = np.array(palette[:768], np.int64).clip(0, 255).astype(np.uint8)
        given = given[:len(given) // 3 * 3].reshape(-1, 3)
        full[:len(given)] = given
    return full


def draw_overlay(image: np.ndarray, index_mask: np.ndarray, lut: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: object pixels blended `alpha` with their colour, a 1-pixel contour in full colour."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ShapeError(f"overlay frame: expected RGB (H, W, 3), got {image.shape}")
    if index_mask.shape != image.shape[:2]:
        raise ShapeError(f"overlay mask {index_mask.shape} does not match its frame {image.shape[:2]}")
    m = np.asarray(index_mask, np.int64)
    ids = np.where(m > 0, (m - 1) % 255 + 1, 0)        # ids above 255 reuse the palette's colours
    fg = ids > 0
    edge = np.zeros(m.shape, bool)                      # pixels with a differently labelled 4-neighbour
    edge[:, 1:] |= m[:, 1:] != m[:, :-1]
    edge[:, :-1] |= m[:, :-1] != m[:, 1:]
    edge[1:] |= m[1:] != m[:-1]
    edge[:-1] |= m[:-1] != m[1:]
    edge &= fg
    out = image.astype(np.float32)
    colour = lut[ids].astype(np.float32)                # (H, W, 3)
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg]
    out[edge] = colour[edge]
    return np.rint(out).clip(0, 255).astype(np.uint8)


def _encoder(av: object) -> str:
    for name in ("libx264", "mpeg4"):
        try:
            av.Codec(name, "w")  # type: ignore[attr-defined]
            return name
        except Exception:  # noqa: BLE001 - PyAV raises various errors for unknown encoders
            continue
    raise InputError("this FFmpeg build (PyAV) has neither the libx264 nor the mpeg4 encoder; "
                     "install a PyAV wheel with them (pip install av)")


class VideoOverlayWriter:
    """Write frames + index masks as an overlay mp4; the file is opened on the first frame.

    Odd frame sizes are padded by one row/column (edge pixels repeated): yuv420p needs even sizes.
    """

    def __init__(self, path: str | Path, *, palette: list[int] | None = None, fps: float = DEFAULT_FPS,
                 alpha: float = 0.5) -> None:
        if not fps or fps <= 0:
            raise InputError(f"overlay fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.alpha = alpha
        self._lut = palette_lut(palette)
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None      # (H, W) of the input frames
        self._closed = False
        self.frames_written = 0
        self.codec: str | None = None

    def __enter__(self) -> "VideoOverlayWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, h: int, w: int) -> None:
        av = av_mod.load()
        self._av = av
        self.codec = _encoder(av)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w")
            stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
        except _av_errors(av) as exc:
            raise InputError(f"cannot write the overlay video {self.path}: {exc}") from exc
        stream.width, stream.height = w + w % 2, h + h % 2
        stream.pix_fmt = "yuv420p"
        if self.codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast"}
        else:
            stream.bit_rate = 8_000_000
        self._stream = stream
        self._size = (h, w)
        log.debug("overlay %s: %s %dx%d @ %.3f fps", self.path, self.codec, stream.width, stream.height, self.fps)

    def add(self, image: np.ndarray, index_mask: np.ndarray) -> None:
        """Append one RGB uint8 frame (H, W, 3) with its (H, W) index mask."""
        if self._closed:
            raise StateError(f"overlay {self.path}: add() after close()")
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ShapeError(f"overlay frame: expected uint8 RGB, got {image.dtype}")
        h, w = image.shape[:2]
        if self._container is None:
            self._open(h, w)
        elif (h, w) != self._size:
            raise ShapeError(f"overlay frame {h}x{w} differs from the video's {self._size[0]}x{self._size[1]}")
        rgb = draw_overlay(image, index_mask, self._lut, alpha=self.alpha)
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (no file if no frame was added)."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            log.warning("overlay %s: no frames were added; nothing written", self.path)
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
        log.debug("overlay %s: %d frames", self.path, self.frames_written)
