"""Reading frames and masks, writing index masks/probabilities (torch-free).

Frames are RGB uint8 (H, W, 3); masks are index ("P" palette or "L") PNGs: value = object id.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from s3rt.errors import InputError, OutputError, ShapeError
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


@dataclass(frozen=True)
class FrameListing:
    """A frames folder: the image files to read, in name order, and the entries named like frames
    that cannot be read as one (FIFO, socket, folder, broken link or symlink loop), with why."""

    files: list[Path]
    skipped: list[tuple[Path, str]]

    def frames(self) -> Iterator[Frame]:
        """Every entry as a Frame in name order; a skipped one is a Frame carrying its reason."""
        why = dict(self.skipped)
        for p in sorted([*self.files, *why]):
            yield Frame(p.stem, None, error=f"{p.name}: {why[p]}, skipped") if p in why else frame_or_error(p)


def scan_frames(folder: str | Path) -> FrameListing:
    """List a frames folder without opening anything (a FIFO would block a read forever).

    Two files whose names differ only in the suffix or its case (00009.png, 00009.PNG) would write
    the same mask file: refused, so the count of masks written is the count of frames.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"frames folder not found: {folder}")
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        problem = _not_a_file(p)
        if problem:
            skipped.append((p, problem))
        else:
            files.append(p)
    stems: dict[str, list[str]] = {}
    for p in files:
        stems.setdefault(p.stem, []).append(p.name)
    clash = {stem: names for stem, names in stems.items() if len(names) > 1}
    if clash:
        stem, names = next(iter(clash.items()))
        raise InputError(f"{folder}: {len(clash)} frame name(s) used by several files, e.g. {', '.join(names)}: "
                         f"their masks would all be {stem}.png; rename or remove the extra files")
    if not files:
        raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return FrameListing(files, skipped)


def _not_a_file(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return "a symlink loop" if exc.errno == errno.ELOOP else "a broken link" if path.is_symlink() else \
            f"unreadable ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "not a regular file")
    return f"{kind}, not an image file"


def list_frames(folder: str | Path) -> list[Path]:
    """The readable image files of a frames folder, in name order (see scan_frames)."""
    return scan_frames(folder).files


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
    yield from scan_frames(folder).frames()


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


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text.encode())


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_why(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o666 & ~current_umask())     # mkstemp makes 0600; outputs follow the user's umask
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {_why(exc)}") from None
        raise


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full; free space or write elsewhere (--out)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{exc.strerror.lower()}; choose a writable folder (--out)"
    return exc.strerror or str(exc)


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sorted_probabilities(probs: np.ndarray, object_ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """Reorder (N+1, H, W) channels so objects follow sorted id order (background stays first)."""
    order = np.argsort(object_ids, kind="stable")
    return probs[np.concatenate([[0], order + 1])], [object_ids[i] for i in order]
