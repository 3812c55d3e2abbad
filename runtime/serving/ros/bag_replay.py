"""Replay an image topic of a bag through a session and record masks, detections and timing.

Offline (default): every frame is processed in record order. ``realtime=True``: frames are
submitted when their record time comes (relative to the first frame, sped up by ``rate``), so
the session's real-time policy drops what it cannot keep up with, as in a live run; every frame
still gets a timing record (processed, dropped with its reason, or failed with its error).

Outputs carry the input frame's header (stamp, frame_id) and its record time. The output bag is
closed (complete and readable) whatever stops the replay: the end, an error, Ctrl-C.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s3rt.errors import S3rtError
from s3rt.runtime.serving.ros.bag import BagFrame, ImageTopicReader, ResultBagWriter
from s3rt.runtime.serving.ros.convert import object_boxes
from s3rt.runtime.serving.ros.outcome import Outcome, Session

log = logging.getLogger(__name__)

Prompt = Callable[[Session, tuple[int, int]], dict[str, int]]


@dataclass
class ReplayReport:
    """Counts add up: frames_in = processed + dropped + errors."""

    frames_in: int = 0
    processed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)     # reason -> count
    errors: list[str] = field(default_factory=list)           # "seq N: message"
    out_of_order: int = 0
    written: dict[str, int] = field(default_factory=dict)
    e2e_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)     # id -> label
    stopped: str | None = None                                # why the replay ended early, if it did

    @property
    def drops(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> dict[str, Any]:
        def stats(xs: list[float]) -> dict[str, float] | None:
            if not xs:
                return None
            a = np.asarray(xs)
            return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}
        return {"frames_in": self.frames_in, "processed": self.processed, "dropped": dict(self.dropped),
                "errors": len(self.errors), "error_details": self.errors[:20], "out_of_order_stamps": self.out_of_order,
                "written": dict(self.written), "objects": self.objects, "e2e_ms": stats(self.e2e_ms),
                "inference_ms": stats(self.inference_ms), "stopped": self.stopped}


class _Recorder:
    """Turns outcomes into output messages and report counts (one place for both modes)."""

    def __init__(self, writer: ResultBagWriter, report: ReplayReport) -> None:
        self.writer, self.report = writer, report
        self.frames: dict[int, BagFrame] = {}

    def frame_error(self, frame: BagFrame, message: str) -> None:
        self.report.errors.append(f"seq {frame.seq}: {message}")
        self.writer.write_timing(frame.bag_ns, self._record(frame, "error", error=message))

    def outcome(self, out: Outcome) -> None:
        frame = self.frames.pop(out.seq)
        if out.error is not None:
            self.frame_error(frame, out.error)
            return
        if out.dropped is not None:
            self.report.dropped[out.dropped] = self.report.dropped.get(out.dropped, 0) + 1
            self.writer.write_timing(frame.bag_ns, self._record(frame, "dropped", reason=out.dropped,
                                                                queue_ms=out.queue_ms))
            return
        assert out.labels is not None
        boxes = object_boxes(out.labels, out.ids, out.scores)
        self.writer.write_result(frame.bag_ns, frame.header, out.labels, boxes)
        self.report.processed += 1
        self.report.e2e_ms.append(out.e2e_ms)
        self.report.inference_ms.append(out.inference_ms)
        self.writer.write_timing(frame.bag_ns, self._record(
            frame, "ok", queue_ms=out.queue_ms, inference_ms=out.inference_ms, e2e_ms=out.e2e_ms,
            objects_visible=[b.object_id for b in boxes]))

    def _record(self, frame: BagFrame, status: str, **extra: Any) -> dict[str, Any]:
        return {"seq": frame.seq, "stamp_ns": frame.stamp_ns, "frame_id": getattr(frame.header, "frame_id", ""),
                "status": status, "out_of_order": frame.out_of_order, "drops_total": self.report.drops, **extra}


def replay(reader: ImageTopicReader, session: Session, writer: ResultBagWriter, *, prompt: Prompt,
           realtime: bool = False, rate: float = 1.0, progress: Callable[[int], None] | None = None,
           report: ReplayReport | None = None) -> ReplayReport:
    """Run every frame of `reader` through `session` into `writer` (already open); see module doc.

    `prompt(session, frame_hw)` gives the first objects; it runs before the first usable frame,
    which is always processed (never dropped), so the objects exist from that frame on.
    Pass `report` to keep the counts of a replay that raises (error, Ctrl-C).
    """
    if rate <= 0:
        raise S3rtError(f"--rate must be > 0, got {rate}")
    report = report if report is not None else ReplayReport()
    rec = _Recorder(writer, report)
    started = False
    t_wall0 = t_bag0 = 0.0
    try:
        for frame in reader:
            report.frames_in += 1
            report.out_of_order += int(frame.out_of_order)
            if progress is not None:
                progress(1)
            if frame.error is not None:
                rec.frame_error(frame, frame.error)
                continue
            assert frame.image is not None
            rec.frames[frame.seq] = frame
            if not started:
                report.objects = prompt(session, frame.image.shape[:2])
                started = True
                rec.outcome(session.process(frame.image, frame.seq, frame.stamp_ns))
                t_wall0, t_bag0 = time.perf_counter(), frame.bag_ns
                continue
            if not realtime:
                rec.outcome(session.process(frame.image, frame.seq, frame.stamp_ns))
                continue
            due = t_wall0 + (frame.bag_ns - t_bag0) / 1e9 / rate
            while (wait := due - time.perf_counter()) > 0:
                for out in session.poll(timeout_s=min(wait, 0.05)):
                    rec.outcome(out)
            session.submit(frame.image, frame.seq, frame.stamp_ns)
            for out in session.poll():
                rec.outcome(out)
        if realtime:
            deadline = time.perf_counter() + 60.0
            while rec.frames and time.perf_counter() < deadline:
                for out in session.poll(timeout_s=0.05):
                    rec.outcome(out)
            if rec.frames:
                raise S3rtError(f"{len(rec.frames)} submitted frames got no outcome within 60 s")
    except KeyboardInterrupt:
        report.stopped = "interrupted (Ctrl-C)"
        raise
    except S3rtError as exc:
        report.stopped = f"error: {exc}"
        raise
    finally:
        report.written = dict(writer.counts)
    if started is False and report.frames_in:
        log.warning("no usable frame in the topic: every frame had an error")
    return report
