"""Run a whole clip through a tracker and write masks, probabilities and a report."""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3rt import __version__
from s3rt.errors import InputError, OutputError, ShapeError
from s3rt.runtime.io.files import Frame, atomic_write, save_npy, sorted_probabilities, write_index_mask
from s3rt.runtime.preprocess import check_rgb8, resize_index_mask
from s3rt.runtime.tracker import FrameResult, Tracker

log = logging.getLogger(__name__)


@dataclass
class RunReport:
    frames: int = 0
    object_ids: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    memory_frames: int = 0
    backend: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    bad_frames: list[dict] = field(default_factory=list)     # {"frame": stem, "error": why}, skipped
    status: str = "complete"         # "interrupted" (Ctrl-C) or "failed" (an error ended the run)
    error: str | None = None

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms[1:] or self.latencies_ms or [0.0])
        return {
            "s3rt_version": __version__, "status": self.status, "error": self.error,
            "frames": self.frames, "object_ids": self.object_ids,
            "memory_frames": self.memory_frames, "backend": self.backend,
            "fps": float(1000.0 / lat.mean()) if lat.mean() > 0 else None,
            "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                           "p95": float(np.percentile(lat, 95)), "max": float(lat.max())},
            "first_frame_ms": self.latencies_ms[0] if self.latencies_ms else None,
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "processor": platform.processor() or platform.machine()},
            "bad_frames": {"count": len(self.bad_frames), "skipped": self.bad_frames},
            "notes": self.notes,
        }

    def write(self, out_dir: Path) -> None:
        s = self.summary()
        with atomic_write(out_dir / "report.json") as f:
            f.write((json.dumps(s, indent=2) + "\n").encode())
        lines = ["# s3rt run report", "", f"- status: {s['status']}" + (f" ({s['error']})" if s["error"] else ""),
                 f"- frames: {s['frames']}, objects: {s['object_ids']}, "
                 f"memory frames: {s['memory_frames']}",
                 f"- backend: {', '.join(f'{k}={v}' for k, v in s['backend'].items())}",
                 f"- throughput: {s['fps']:.2f} FPS (excluding the first frame); latency p50 "
                 f"{s['latency_ms']['p50']:.1f} ms, p95 {s['latency_ms']['p95']:.1f} ms"
                 if s["fps"] else "- throughput: n/a",
                 f"- bad frames skipped: {len(self.bad_frames)}"
                 + "".join(f"\n  - {b['frame']}: {b['error']}" for b in self.bad_frames),
                 *[f"- note: {n}" for n in s["notes"]], ""]
        with atomic_write(out_dir / "report.md") as f:
            f.write("\n".join(lines).encode())


MaskLookup = Callable[[str, tuple[int, int]], "np.ndarray | None"]


def mask_folder_lookup(folder: Path | None, *, resize: bool = False) -> MaskLookup:
    """Masks named like their frames (<stem>.png) in `folder` add or re-annotate objects."""
    from s3rt.runtime.io.files import read_mask

    def lookup(stem: str, frame_hw: tuple[int, int]) -> np.ndarray | None:
        if folder is None:
            return None
        path = folder / f"{stem}.png"
        if not path.is_file():
            return None
        mask, _ = read_mask(path)
        return fit_mask(mask, frame_hw, resize=resize, source=str(path))

    return lookup


def fit_mask(mask: np.ndarray, frame_hw: tuple[int, int], *, resize: bool, source: str) -> np.ndarray:
    if mask.shape == frame_hw:
        return mask
    if not resize:
        raise InputError(f"{source}: mask is {mask.shape[0]}x{mask.shape[1]} but its frame is "
                         f"{frame_hw[0]}x{frame_hw[1]}; fix the mask or pass --resize-masks to resize it "
                         "(nearest neighbour)")
    return resize_index_mask(mask, frame_hw)


BAD_FRAME_POLICIES = ("skip", "fail")


def run_clip(tracker: Tracker, frames: Iterable[Frame], *, first_mask: np.ndarray, out_dir: str | Path,
             palette: list[int] | None = None, extra_masks: MaskLookup | None = None, save_probs: bool = False,
             total: int | None = None, progress: bool = True, resize_masks: bool = False,
             on_result: Callable[[Frame, FrameResult], None] | None = None,
             on_bad_frame: str = "skip") -> RunReport:
    """Segment every frame; the first frame gets `first_mask`. Writes <stem>.png (+ .npy).

    A frame that cannot be used (unreadable, or a size other than the stream's) is skipped and
    listed in the report (`on_bad_frame="skip"`) or ends the run with an InputError naming it
    (`"fail"`); either way every mask written before stays intact (files are written atomically)
    and a skipped frame never reaches the tracker, so its memory is untouched. The first frame
    carries the objects, so it cannot be skipped.
    """
    from tqdm import tqdm

    if on_bad_frame not in BAD_FRAME_POLICIES:
        raise InputError(f"on_bad_frame must be one of {', '.join(BAD_FRAME_POLICIES)}, got {on_bad_frame!r}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out}: {exc.strerror}") from None
    report = RunReport(backend=tracker.backend.describe())
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)  # type: ignore[arg-type]
    # frames are consumed one at a time (a camera never ends): total only sizes the progress bar
    bar = tqdm(total=total or None, desc="segmenting", unit="frame", disable=not progress, leave=False)
    it = iter(frames)
    current = next(it, None)
    if current is None:
        raise InputError("no frames to segment")
    stream_hw: tuple[int, int] | None = None
    index = 0
    try:
        while current is not None:
            nxt = next(it, None)
            problem = _frame_problem(current, stream_hw)
            if problem is not None:
                if index == 0:
                    raise InputError(f"first frame {current.name}: {problem}; the first-frame mask belongs to "
                                     "it, so the run cannot start")
                if on_bad_frame == "fail":
                    raise InputError(f"frame {current.name}: {problem} (--on-bad-frame fail; the {report.frames} "
                                     f"masks written before it are complete)")
                log.warning("skipping frame %s: %s", current.name, problem)
                report.bad_frames.append({"frame": current.name, "error": problem})
                if extra_masks is not None and _has_mask(extra_masks, current.name, stream_hw):
                    report.notes.append(f"the mask for skipped frame {current.name} was not applied")
                bar.update(1)
                current = nxt
                continue
            hw = current.image.shape[:2]  # type: ignore[union-attr]
            stream_hw = stream_hw or hw
            mask = fit_mask(first_mask, hw, resize=resize_masks, source="first-frame mask") if index == 0 else (
                extra_masks(current.name, hw) if extra_masks else None)
            t0 = time.perf_counter()
            result = tracker.step(current.image, mask=mask, end=nxt is None)
            report.latencies_ms.append((time.perf_counter() - t0) * 1000)
            report.memory_frames += int(result.memory_written)
            write_index_mask(out / f"{current.name}.png", result.index_mask, palette)
            if save_probs:
                probs, _ = sorted_probabilities(result.probabilities, result.object_ids)
                save_npy(out / f"{current.name}.npy", probs.astype(np.float32))
            if on_result is not None:
                on_result(current, result)
            report.frames += 1
            index += 1
            bar.update(1)
            current = nxt
    except BaseException as exc:
        _write_stopped_report(report, tracker, out, exc)
        raise
    finally:
        bar.close()
    report.object_ids = sorted(tracker.object_ids)
    return report


def _write_stopped_report(report: RunReport, tracker: Tracker, out: Path, exc: BaseException) -> None:
    """A run stopped by Ctrl-C or an error still leaves report.json saying so and what was written
    (best effort: on a full disk the report may not fit either)."""
    report.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
    report.error = None if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
    report.object_ids = sorted(tracker.object_ids)
    try:
        report.write(out)
    except (OutputError, OSError) as write_exc:
        log.warning("could not write the report of the stopped run: %s", write_exc)


def _frame_problem(frame: Frame, stream_hw: tuple[int, int] | None) -> str | None:
    """Why `frame` cannot be segmented in this stream, or None."""
    if frame.error is not None:
        return frame.error
    try:
        check_rgb8(frame.image, stream_hw=stream_hw)
    except (InputError, ShapeError) as exc:
        return str(exc)
    return None


def _has_mask(lookup: MaskLookup, name: str, hw: tuple[int, int] | None) -> bool:
    try:
        return hw is not None and lookup(name, hw) is not None
    except InputError:
        return True
