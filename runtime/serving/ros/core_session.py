"""`CoreSession`: the ROS adapters' `Session` over the serving core's `StreamSession`.

Bag replay and the node drive the same `StreamSession` the gRPC server drives: its object table
(user id -> label), its real-time policy (latest frame wins, deadline drops at dequeue, the
`DropReason` values) and its per-frame timings. This module only translates:

- ROS capture stamps (int ns) -> the core's `capture_ts` (float s); the exact ns are kept by seq
  and given back with the outcome (a float second cannot hold a 19-digit ns stamp).
- Masks given before a frame (a service call, a bag prompt) are held and sent with the next frame
  as the core's add (or update) control, which the core always processes. Their labels are pinned
  when held, so the label a caller is told is the label in the images; an index mask keeps its
  pixel values as labels (id = str(value)), so replayed masks equal `s3rt run`'s.
- Core outputs -> `Outcome`: `Result` (labels, label -> id, scores, queue / inference / end-to-end
  ms), `Dropped` (reason, time waited), `FrameFailed` and refused frame-carrying controls (error).

Two modes, fixed when opened: offline (`realtime=False`, synchronous core session with
`StreamOptions.every_frame()`: `process` runs a frame now, nothing is dropped) and real time
(threaded core session, latest frame wins, optional deadline: `submit` never blocks, outcomes
come from `poll`; `process` only for a frame that carries held masks).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from s3rt.errors import CapacityError, ConfigError, ObjectIdError, S3rtError, ShapeError, StateError
from s3rt.runtime.serving.ros.outcome import Outcome
from s3rt.runtime.serving.messages import ControlReply, Dropped, FrameFailed, Output, Result
from s3rt.runtime.serving.session import StreamOptions, StreamSession
from s3rt.runtime.tracker import Tracker


@dataclass
class _Held:
    """Masks waiting for the next frame, as one index mask whose values are the pinned labels."""

    op: str                          # "add" (new ids) or "update" (ids the core tracks)
    index: np.ndarray                # (H, W) int64, value = label, 0 = no object given
    labels: dict[str, int]           # id -> label


class CoreSession:
    """One camera / one bag topic over one core stream. Not thread-safe: call from one thread."""

    def __init__(self, stream: StreamSession, *, backend_to_close: object | None = None) -> None:
        self.stream = stream
        self._backend = backend_to_close
        self._held: _Held | None = None
        self._stamps: dict[int, int] = {}             # seq -> capture ns of a submitted frame, until its outcome
        self._requests: dict[int, int] = {}           # request id -> seq of a submitted frame carrying masks
        self._in_flight: dict[int, dict[str, int]] = {}   # request id -> labels of an add not handled yet
        self._request_ids = itertools.count(1)

    @classmethod
    def open(cls, tracker: Tracker, *, realtime: bool = False, deadline_ms: float | None = None,
             max_objects: int | None = None, owns_backend: bool = False, stream_id: str = "ros") -> "CoreSession":
        """A core stream for `tracker`: every frame in order (offline) or the real-time policy."""
        if realtime:
            options = StreamOptions(deadline_ms=deadline_ms, latest_frame_wins=True, max_objects=max_objects)
        elif deadline_ms is not None:
            raise ConfigError("deadline_ms applies only to a real-time session (realtime=True)")
        else:
            options = StreamOptions.every_frame(max_objects=max_objects)
        stream = StreamSession(tracker, options, stream_id=stream_id, threaded=realtime)
        return cls(stream, backend_to_close=tracker.backend if owns_backend else None)

    # -- objects ---------------------------------------------------------------------------------
    @property
    def objects(self) -> dict[str, int]:
        """id -> label of every object tracked or given for the next frame."""
        out = {str(k): v for k, v in self.stream.objects.labels.items()}
        for labels in self._in_flight.values():
            out.update(labels)
        if self._held is not None:
            out.update(self._held.labels)
        return out

    def add_objects(self, masks: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Binary (H, W) masks by id, sent with the next frame. New ids get the smallest free labels;
        tracked ids are re-given (the core's update). Returns id -> label of the ids given."""
        if not masks:
            raise ObjectIdError("add_objects: no objects given")
        planes = {str(k): np.asarray(m) for k, m in masks.items()}
        shapes = {p.shape for p in planes.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ShapeError(f"add_objects: masks must be (H, W) and all the same size, got {sorted(shapes)}")
        claimed = self.objects
        used = set(claimed.values())
        free = (v for v in itertools.count(1) if v not in used)
        labels = {oid: claimed[oid] if oid in claimed else next(free) for oid in planes}
        index = np.zeros(next(iter(shapes)), np.int64)
        for oid, plane in planes.items():                 # later masks win where they overlap
            index[plane.astype(bool)] = labels[oid]
        self._hold(index, labels)
        return labels

    def add_index_mask(self, mask: np.ndarray) -> dict[str, int]:
        """An (H, W) index mask sent with the next frame: label = pixel value, id = str(value)."""
        mask = np.asarray(mask)
        if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
            raise ShapeError(f"index mask: expected a 2-D integer array (H, W), got {mask.dtype} {mask.shape}")
        values = [int(v) for v in np.unique(mask) if v != 0]
        if not values:
            raise ObjectIdError("the mask has no object pixels (all zero): nothing to track")
        labels = {str(v): v for v in values}
        self._hold(mask.astype(np.int64), labels)
        return labels

    def remove_object(self, object_id: str) -> None:
        object_id = str(object_id)
        held = self._held
        if held is not None and object_id in held.labels:  # not sent yet: take it out of the held masks
            held.index[held.index == held.labels.pop(object_id)] = 0
            if not held.labels:
                self._held = None
            if held.op == "add":
                return
        self.stream.remove_objects([object_id])          # waits for the frames before it (real time)
        self._in_flight.clear()                          # ... so every earlier add has been handled

    def reset(self) -> None:
        self._held = None
        self.stream.reset()
        self._in_flight.clear()

    def _hold(self, index: np.ndarray, labels: dict[str, int]) -> None:
        """Merge masks into the held ones after every check (a refused call changes nothing)."""
        claimed = self.objects
        owner = {v: k for k, v in claimed.items()}
        clash = {v: owner[v] for k, v in labels.items() if owner.get(v, k) != k}
        if clash:
            raise ObjectIdError(f"labels already belong to other objects (label -> id): {clash}")
        held = self._held
        if held is not None and held.index.shape != index.shape:
            raise ShapeError(f"masks are {index.shape[0]}x{index.shape[1]} but masks of "
                             f"{held.index.shape[0]}x{held.index.shape[1]} wait for the next frame")
        hw = self.stream.frame_hw
        if hw is not None and index.shape != tuple(hw):
            raise ShapeError(f"masks must be {hw[0]}x{hw[1]} like the stream's frames, got "
                             f"{index.shape[0]}x{index.shape[1]}")
        merged = {**(held.labels if held is not None else {}), **labels}
        known = {str(k) for k in self.stream.objects.labels}.union(*self._in_flight.values())
        new = set(merged) - known
        if new and new != set(merged):
            raise ObjectIdError(f"objects {sorted(set(merged) - new)} are tracked and {sorted(new)} are new: "
                                "give them in separate calls, with a frame between")
        if len(set(claimed) | set(merged)) > self.stream.objects.max_objects:
            raise CapacityError(f"tracking {sorted(claimed)}, adding {sorted(set(merged) - set(claimed))} would "
                                f"exceed this stream's limit of {self.stream.objects.max_objects} objects")
        if held is not None:
            index = np.where(index != 0, index, held.index)
        present = set(np.unique(index).tolist())
        empty = sorted(k for k, v in merged.items() if v not in present)
        if empty:
            raise ObjectIdError(f"empty masks for objects {empty}: no pixels left for them")
        self._held = _Held(op="add" if new else "update", index=index, labels=merged)

    # -- frames ----------------------------------------------------------------------------------
    def process(self, frame: np.ndarray, seq: int, capture_ns: int) -> Outcome:
        """Segment `frame` now. Real time: only a frame carrying held masks (never dropped)."""
        if self._held is not None:
            return self._send_held(frame, seq, capture_ns)
        if self.stream.threaded:
            raise StateError("process() on a real-time session runs only a frame that carries new masks; "
                             "use submit() and poll()")
        return self._outcome(self.stream.process(frame, seq, capture_ns / 1e9), capture_ns)

    def submit(self, frame: np.ndarray, seq: int, capture_ns: int) -> None:
        """Hand a frame to the core's real-time policy (held masks go with it as a control)."""
        if not self.stream.threaded:
            raise StateError("submit() needs a real-time session (CoreSession.open(..., realtime=True)); "
                             "use process()")
        self._stamps[seq] = capture_ns
        held, rid = self._held, None
        try:
            if held is None:
                self.stream.submit(frame, seq, capture_ns / 1e9)
                return
            rid = next(self._request_ids)
            self._requests[rid] = seq
            if held.op == "add":
                self._in_flight[rid] = dict(held.labels)
            self._held = None
            self.stream.control(held.op, frame=frame, seq=seq, capture_ts=capture_ns / 1e9, request_id=rid,
                                **self._control_args(held))
        except BaseException:
            self._stamps.pop(seq, None)
            if rid is not None:
                self._requests.pop(rid, None)
                self._in_flight.pop(rid, None)
                self._held = held
            raise

    def poll(self, timeout_s: float = 0.0) -> list[Outcome]:
        """Outcomes ready now (waiting up to `timeout_s` for the first), in frame order."""
        if not self.stream.threaded:
            return []
        until = time.monotonic() + max(0.0, timeout_s)
        found: list[Outcome] = []
        while True:
            out = self.stream.next_output(0 if found else max(0.0, until - time.monotonic()))
            if out is None:
                if found or time.monotonic() >= until or self.stream.closed:
                    break
                continue
            outcome = self._from_output(out)
            if outcome is not None:
                found.append(outcome)
        return sorted(found, key=lambda o: o.seq)

    def close(self) -> None:
        self.stream.close("closed by the ROS adapter")
        if self._backend is not None:
            self._backend.close()

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _control_args(held: _Held) -> dict:
        args: dict = {"mask": held.index, "ids": {v: k for k, v in held.labels.items()}}
        if held.op == "add":
            args["labels"] = dict(held.labels)
        return args

    def _send_held(self, frame: np.ndarray, seq: int, capture_ns: int) -> Outcome:
        """The frame with the held masks, waited for (the core never drops such a frame)."""
        held, self._held = self._held, None
        assert held is not None
        try:
            reply = self.stream.control(held.op, frame=frame, seq=seq, capture_ts=capture_ns / 1e9,
                                        **self._control_args(held)).result()
        except S3rtError as exc:
            return Outcome(seq, capture_ns, error=f"{held.op} objects {sorted(held.labels)} refused: {exc}")
        assert reply.result is not None
        return self._outcome(reply.result, capture_ns)

    def _from_output(self, out: Output) -> Outcome | None:
        if not isinstance(out, ControlReply):
            return self._outcome(out, self._stamps.pop(out.seq, round(out.capture_ts * 1e9)))
        seq = self._requests.pop(out.request_id, None) if out.request_id is not None else None
        if seq is None:
            return None                        # remove / reset / a waited-for add: answered to the caller
        self._in_flight.pop(out.request_id, None)
        capture_ns = self._stamps.pop(seq, 0)
        if out.ok and out.result is not None:
            return self._outcome(out.result, capture_ns)
        return Outcome(seq, capture_ns, error=f"{out.op} objects refused: {out.error}: {out.message}")

    @staticmethod
    def _outcome(out: Result | Dropped | FrameFailed, capture_ns: int) -> Outcome:
        if isinstance(out, Dropped):
            return Outcome(out.seq, capture_ns, dropped=out.reason.value, queue_ms=out.queue_ms)
        if isinstance(out, FrameFailed):
            return Outcome(out.seq, capture_ns, error=out.message)
        t = out.timing
        return Outcome(out.seq, capture_ns, labels=out.labels,          # (H, W) uint8|uint16, 0 = background
                       ids={o.label: str(o.id) for o in out.objects},
                       scores={o.label: o.score for o in out.objects if o.score is not None},
                       queue_ms=t.queue_ms, inference_ms=t.inference_ms, e2e_ms=t.total_ms)
