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
from s3rt.errors import InputError
from s3rt.runtime.io import Frame, resize_mask, sorted_probabilities, write_index_mask
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

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms[1:] or self.latencies_ms or [0.0])
        return {
            "s3rt_version": __version__, "frames": self.frames, "object_ids": self.object_ids,
            "memory_frames": self.memory_frames, "backend": self.backend,
            "fps": float(1000.0 / lat.mean()) if lat.mean() > 0 else None,
            "latency_ms": {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                           "p95": float(np.percentile(lat, 95)), "max": float(lat.max())},
            "first_frame_ms": self.latencies_ms[0] if self.latencies_ms else None,
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "processor": platform.processor() or platform.machine()},
            "notes": self.notes,
        }

    def write(self, out_dir: Path) -> None:
        s = self.summary()
        (out_dir / "report.json").write_text(json.dumps(s, indent=2) + "\n")
        lines = ["# s3rt run report", "", f"- frames: {s['frames']}, objects: {s['object_ids']}, "
                 f"memory frames: {s['memory_frames']}",
                 f"- backend: {', '.join(f'{k}={v}' for k, v in s['backend'].items())}",
                 f"- throughput: {s['fps']:.2f} FPS (excluding the first frame); latency p50 "
                 f"{s['latency_ms']['p50']:.1f} ms, p95 {s['latency_ms']['p95']:.1f} ms"
                 if s["fps"] else "- throughput: n/a", *[f"- note: {n}" for n in s["notes"]], ""]
        (out_dir / "report.md").write_text("\n".join(lines))


MaskLookup = Callable[[str, tuple[int, int]], "np.ndarray | None"]


def mask_folder_lookup(folder: Path | None, *, resize: bool = False) -> MaskLookup:
    """Masks named like their frames (<stem>.png) in `folder` add or re-annotate objects."""
    from s3rt.runtime.io import read_mask

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
    return resize_mask(mask, frame_hw)


def run_clip(tracker: Tracker, frames: Iterable[Frame], *, first_mask: np.ndarray, out_dir: str | Path,
             palette: list[int] | None = None, extra_masks: MaskLookup | None = None, save_probs: bool = False,
             total: int | None = None, progress: bool = True, resize_masks: bool = False,
             on_result: Callable[[Frame, FrameResult], None] | None = None) -> RunReport:
    """Segment every frame; the first frame gets `first_mask`. Writes <stem>.png (+ .npy)."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = RunReport(backend=tracker.backend.describe())
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)  # type: ignore[arg-type]
    # frames are consumed one at a time (a camera never ends): total only sizes the progress bar
    bar = tqdm(total=total or None, desc="segmenting", unit="frame", disable=not progress, leave=False)
    it = iter(frames)
    current = next(it, None)
    if current is None:
        raise InputError("no frames to segment")
    index = 0
    while current is not None:
        nxt = next(it, None)
        hw = current.image.shape[:2]
        mask = fit_mask(first_mask, hw, resize=resize_masks, source="first-frame mask") if index == 0 else (
            extra_masks(current.name, hw) if extra_masks else None)
        t0 = time.perf_counter()
        result = tracker.step(current.image, mask=mask, end=nxt is None)
        report.latencies_ms.append((time.perf_counter() - t0) * 1000)
        report.memory_frames += int(result.memory_written)
        write_index_mask(out / f"{current.name}.png", result.index_mask, palette)
        if save_probs:
            probs, _ = sorted_probabilities(result.probabilities, result.object_ids)
            np.save(out / f"{current.name}.npy", probs.astype(np.float32))
        if on_result is not None:
            on_result(current, result)
        report.frames += 1
        index += 1
        bar.update(1)
        current = nxt
    bar.close()
    report.object_ids = sorted(tracker.object_ids)
    return report
