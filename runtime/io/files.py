"""Reading frames and masks, writing index masks/probabilities (torch-free).

Frames are RGB uint8 (H, W, 3); masks are index ("P" palette or "L") PNGs: value = object id.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from s3rt.errors import InputError, ShapeError
from s3rt.runtime.preprocess import resize_index_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def davis_palette() -> list[int]:
    """The DAVIS/PASCAL VOC colour map (bit-interleaved), 256 RGB entries flattened."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


@dataclass(frozen=True)
class Frame:
    """One input frame; a frame that could not be read carries `error` and no image.

    Sources yield unreadable frames as records instead of raising, so one corrupt file or packet
    does not end a run over thousands of good ones (the run decides: skip or fail).
    """
    name: str                          # stem used for output files
    image: np.ndarray | None           # (H, W, 3) uint8 RGB; None when `error` is set
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def list_frames(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"frames folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def read_frame(path: str | Path) -> np.ndarray:
    """An RGB frame; grayscale/RGBA/CMYK files are refused with a clear message."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode != "RGB":
                raise ShapeError(f"{path}: frame is '{mode}' mode, expected RGB "
                                 f"({'grayscale' if mode in ('L', 'I', 'F', '1') else mode}); convert it to RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable or corrupt image ({exc})") from exc


def frame_or_error(path: str | Path) -> Frame:
    """read_frame as a Frame record: a corrupt or non-RGB file becomes Frame(error=...)."""
    path = Path(path)
    try:
        return Frame(path.stem, read_frame(path))
    except (InputError, ShapeError) as exc:
        return Frame(path.stem, None, error=str(exc))


def iter_frame_folder(folder: str | Path) -> Iterator[Frame]:
    for p in list_frames(folder):
        yield frame_or_error(p)


def read_mask(path: str | Path) -> tuple[np.ndarray, list[int] | None]:
    """(H, W) int64 index mask and its palette (None if the PNG has none)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                return np.asarray(im, dtype=np.int64), im.getpalette()
            if im.mode in ("L", "I", "I;16"):
                return np.asarray(im).astype(np.int64), None
            raise ShapeError(f"{path}: mask is '{im.mode}' mode; expected an index mask (palette 'P' or "
                             "grayscale 'L' PNG where pixel value = object id)")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable or corrupt mask ({exc})") from exc


resize_mask = resize_index_mask     # the one nearest-neighbour mask resize (s3rt.runtime.preprocess)


def write_index_mask(path: str | Path, index: np.ndarray, palette: list[int] | None) -> None:
    if index.max(initial=0) > 255:
        raise InputError(f"object id {int(index.max())} does not fit an 8-bit palette PNG (ids must be <= 255)")
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette(palette or davis_palette())
    with atomic_write(path) as f:
        im.save(f, format="PNG")


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    A run stopped by an error, Ctrl-C or a crash leaves every output either complete or absent,
    never a truncated PNG that a later evaluation would read as a wrong mask.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def sorted_probabilities(probs: np.ndarray, object_ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """Reorder (N+1, H, W) channels so objects follow sorted id order (background stays first)."""
    order = np.argsort(object_ids, kind="stable")
    return probs[np.concatenate([[0], order + 1])], [object_ids[i] for i in order]
