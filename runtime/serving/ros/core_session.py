"""`CoreSession`: the ROS adapters' `Session` over the serving core's `StreamSession`.

Bag replay and the node drive the same `StreamSession` the gRPC server drives: its object table
(user id -> label, `ObjectTable`), its real-time policy (latest frame wins, deadline drops at
dequeue, the `DropReason` values) and its per-frame timings. This module keeps no id table of
its own; it only translates:

- ROS capture stamps (int ns) -> the core's `capture_ts` (float s); the exact ns are kept by seq
  and given back with the outcome (a float second cannot hold a 19-digit ns stamp).
- Masks given before a frame (a service call, a bag prompt) are held and sent with the next frame
  as the core's add (or update) control, which the core always processes. New ids are reserved
  in the core's table when given, so the label a caller is told is the label in the images; an
  index mask keeps its pixel values as labels (id = str(value)), so replayed masks equal
  `s3rt run`'s. A refused add drops its reservations (the core does it).
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

from s3rt.errors import ConfigError, ObjectIdError, S3rtError, ShapeError, StateError
from s3rt.runtime.serving.controls import AddObjects, UpdateObjects
from s3rt.runtime.serving.messages import ControlReply, Dropped, FrameFailed, Output, Result
from s3rt.runtime.serving.ros.outcome import Outcome
from s3rt.runtime.serving.session import StreamOptions, StreamSession
from s3rt.runtime.tracker import Tracker


@dataclass
class _Held:
    """The request waiting for the next frame: one index mask whose values are the labels."""

    new: bool                        # an add (ids reserved in the core's table) or an update (tracked ids)
    index: np.ndarray                # (H, W) int64, value = label, 0 = no object given
    ids: dict[str, int]              # id -> label of the ids in this request

    def control(self) -> AddObjects | UpdateObjects:
        value_ids = {v: k for k, v in self.ids.items()}
        return AddObjects(self.index, value_ids, dict(self.ids)) if self.new else UpdateObjects(self.index, value_ids)


class CoreSession:
    """One camera / one bag topic over one core stream. Not thread-safe: call from one thread."""

    def __init__(self, stream: StreamSession, *, backend_to_close: object | None = None) -> None:
        self.stream = stream
        self._backend = backend_to_close
        self._held: _Held | None = None
        self._stamps: dict[int, int] = {}             # seq -> capture ns of a submitted frame, until its outcome
        self._requests: dict[int, int] = {}           # request id -> seq of a submitted frame carrying masks
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
        """id -> label of every object tracked, on its way to the tracker, or given for the next frame."""
        return {str(k): v for k, v in self.stream.objects.claimed.items()}

    def add_objects(self, masks: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Binary (H, W) masks by id, sent with the next frame. New ids get the smallest free labels;
        tracked ids are re-given (the core's update). Returns id -> label of the ids given."""
        if not masks:
            raise ObjectIdError("add_objects: no objects given")
        planes = {str(k): np.asarray(m) for k, m in masks.items()}
        shapes = {p.shape for p in planes.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ShapeError(f"add_objects: masks must be (H, W) and all the same size, got {sorted(shapes)}")
        shape = next(iter(shapes))

        def paint(labels: dict[str, int]) -> np.ndarray:
            index = np.zeros(shape, np.int64)
            for oid, plane in planes.items():                 # later masks win where they overlap
                index[plane.astype(bool)] = labels[oid]
            return index

        return self._hold(list(planes), paint, shape)

    def add_index_mask(self, mask: np.ndarray) -> dict[str, int]:
        """An (H, W) index mask sent with the next frame: label = pixel value, id = str(value)."""
        mask = np.asarray(mask)
        if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
            raise ShapeError(f"index mask: expected a 2-D integer array (H, W), got {mask.dtype} {mask.shape}")
        values = [int(v) for v in np.unique(mask) if v != 0]
        if not values:
            raise ObjectIdError("the mask has no object pixels (all zero): nothing to track")
        wanted = {str(v): v for v in values}
        return self._hold(list(wanted), lambda labels: mask.astype(np.int64), mask.shape, wanted=wanted)

    def remove_object(self, object_id: str) -> None:
        object_id = str(object_id)
        held = self._held
        if held is not None and object_id in held.ids:     # not sent yet: take it out of the held masks
            held.index[held.index == held.ids.pop(object_id)] = 0
            if not held.ids:
                self._held = None
            if held.new:
                self.stream.objects.unreserve([object_id])
                return
        self.stream.remove_objects([object_id])          # waits for the frames before it (real time)

    def reset(self) -> None:
        self._held = None
        self.stream.reset()                              # clears the core's table, reservations included

    def _hold(self, ids: list[str], paint, shape: tuple[int, ...], *, wanted: dict[str, int] | None = None
              ) -> dict[str, int]:
        """Check, reserve the new ids' labels in the core's table, and merge into the held request.
        A refused call changes nothing."""
        table = self.stream.objects
        held = self._held
        if held is not None and held.index.shape != tuple(shape):
            raise ShapeError(f"masks are {shape[0]}x{shape[1]} but masks of "
                             f"{held.index.shape[0]}x{held.index.shape[1]} wait for the next frame")
        hw = self.stream.frame_hw
        if hw is not None and tuple(shape) != tuple(hw):
            raise ShapeError(f"masks must be {hw[0]}x{hw[1]} like the stream's frames, got {shape[0]}x{shape[1]}")
        claimed = {str(k): v for k, v in table.claimed.items()}
        tracked = {str(k) for k in table.labels}
        given = set(ids) | set(held.ids if held is not None else ())
        new = [i for i in ids if i not in claimed]
        old = sorted(given & tracked)
        if (new or (held is not None and held.new)) and old:
            raise ObjectIdError(f"objects {old} are tracked and {sorted(given - tracked)} are new: "
                                "give them in separate calls, with a frame between")
        mismatch = {i: claimed[i] for i in ids if wanted and i in claimed and claimed[i] != wanted[i]}
        if mismatch:
            raise ObjectIdError(f"ids {mismatch} already have other labels than their mask values")
        reserved = table.reserve(new, {i: wanted[i] for i in new} if wanted else None) if new else {}
        labels = {i: claimed.get(i, reserved.get(i)) for i in ids}
        index = paint(labels)
        if held is not None:
            index = np.where(index != 0, index, held.index)
        merged = {**(held.ids if held is not None else {}), **labels}
        present = set(np.unique(index).tolist())
        empty = sorted(k for k, v in merged.items() if v not in present)
        if empty:
            table.unreserve(new)
            raise ObjectIdError(f"empty masks for objects {empty}: no pixels left for them")
        self._held = _Held(new=bool(new) or (held is not None and held.new), index=index, ids=merged)
        return labels

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
            self._held = None
            self.stream.control(held.control(), frame=frame, seq=seq, capture_ts=capture_ns / 1e9, request_id=rid)
        except BaseException:
            self._stamps.pop(seq, None)
            if rid is not None:
                self._requests.pop(rid, None)
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
    def _send_held(self, frame: np.ndarray, seq: int, capture_ns: int) -> Outcome:
        """The frame with the held masks, waited for (the core never drops such a frame)."""
        held, self._held = self._held, None
        assert held is not None
        try:
            reply = self.stream.control(held.control(), frame=frame, seq=seq,
                                        capture_ts=capture_ns / 1e9).result()
        except S3rtError as exc:
            op = "add" if held.new else "update"
            return Outcome(seq, capture_ns, error=f"{op} objects {sorted(held.ids)} refused: {exc}")
        assert reply.result is not None
        return self._outcome(reply.result, capture_ns)

    def _from_output(self, out: Output) -> Outcome | None:
        if not isinstance(out, ControlReply):
            return self._outcome(out, self._stamps.pop(out.seq, round(out.capture_ts * 1e9)))
        seq = self._requests.pop(out.request_id, None) if out.request_id is not None else None
        if seq is None:
            return None                        # remove / reset / a waited-for add: answered to the caller
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
