"""`StreamSession`: one camera stream = one tracker, its fixed buffers and the real-time policy.

Two ways to drive it, chosen at construction, running the same code (`_handle`) on each item:
- threaded (serving): `submit()` frames and `control()` operations from any thread; a worker
  thread handles them in order (executor.py) and every outcome arrives through `next_output()` /
  iteration;
- synchronous (offline replay, tests): items run on the caller's thread as they are given;
  `process()` returns a frame's output. Nothing is dropped unless the deadline says so.

Controls are typed (controls.py). A frame that comes with an add/update mask is part of that
control: it is never superseded or dropped. What is dropped and when is the stream's
`DropPolicy` (policy.py): supersede, backlog, deadline, and closing a stream whose client stopped
reading.

Outputs wait in the stream until the client reads them, and a client may stall, so the unread
ones are bounded: results (frame results and the results carried by add/update replies) by
`max_unread_results`, everything by `max_unread_outputs` (the stream is then closed); controls
waiting in the inbox by `max_waiting_controls` (the sender blocks).
"""

from __future__ import annotations

import dataclasses

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s3rt.errors import CapacityError, ConfigError, ObjectIdError, S3rtError, ShapeError, StateError, StreamClosedError
from s3rt.runtime.preprocess import check_frame
from s3rt.runtime.serving.controls import AddObjects, Control, RemoveObjects, Reset, UpdateObjects
from s3rt.runtime.serving.executor import InlineExecutor, WorkerExecutor
from s3rt.runtime.serving.inbox import ControlItem, DecidedItem, FrameItem, Inbox, Item
from s3rt.runtime.serving.messages import (ControlReply, Dropped, DropReason, FrameFailed, ObjectId, Output,
                                           Result, Timing)
from s3rt.runtime.serving.objects import ObjectTable, label_image, object_stats, relabel, request_mask
from s3rt.runtime.serving.outbox import Outbox
from s3rt.runtime.serving.policy import DropPolicy, Verdict
from s3rt.runtime.tracker import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOptions:
    """Per-stream real-time policy.

    deadline_ms: a frame older than this when dequeued is dropped (None: no deadline).
    deadline_from: "receive" (age since the server got it; clocks need not agree) or "capture"
      (age since capture_ts, wall-clock seconds; needs synchronised clocks).
    latest_frame_wins: True = depth-1 slot, a newer frame replaces a waiting one; False = every
      frame is processed in order and submit() blocks while `max_waiting` frames wait.
    max_waiting: frames that may wait in the inbox (every-frame mode); max_waiting_controls: controls
      (and transport-decided outcomes) that may wait before the sender blocks.
    max_objects: this stream's object limit (None: the tracker's capacity).
    max_unread_results / max_unread_outputs: what a stalled reader may leave unread (module
      docstring); None = unbounded.
    """

    deadline_ms: float | None = 200.0
    deadline_from: str = "receive"
    latest_frame_wins: bool = True
    max_waiting: int = 8
    max_waiting_controls: int = 2
    max_objects: int | None = None
    max_unread_results: int | None = 32
    max_unread_outputs: int | None = 1024

    def __post_init__(self) -> None:
        for name in ("max_unread_results", "max_unread_outputs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or None for unbounded), got {value}")
        if self.deadline_from not in ("receive", "capture"):
            raise ConfigError(f"deadline_from must be 'receive' or 'capture', got {self.deadline_from!r}")
        if self.deadline_ms is not None and not 0 < self.deadline_ms < float("inf"):
            raise ConfigError(f"deadline_ms must be a positive finite number of milliseconds (or None for no "
                              f"deadline), got {self.deadline_ms}")

    @classmethod
    def every_frame(cls, **kw: Any) -> "StreamOptions":
        """Process every frame in order, no deadline: offline replay and exactness tests."""
        return cls(deadline_ms=None, latest_frame_wins=False, **kw)

    @property
    def policy(self) -> DropPolicy:
        return DropPolicy(latest_frame_wins=self.latest_frame_wins, deadline_ms=self.deadline_ms,
                          deadline_from=self.deadline_from, max_unread_results=self.max_unread_results,
                          max_unread_outputs=self.max_unread_outputs)


@dataclass
class StreamCounters:
    """received == processed + failed + sum(dropped) once the stream is drained."""

    received: int = 0
    processed: int = 0
    failed: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in DropReason})
    controls: int = 0
    control_errors: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class StreamSession:
    """One stream. Construct through `SessionManager.open()` (limits, idle timeout) or directly."""

    def __init__(self, tracker: Tracker, options: StreamOptions | None = None, *, stream_id: str = "stream",
                 threaded: bool = True, on_output: Callable[["StreamSession", Output], None] | None = None,
                 inference_lock: Any = None, clock: Callable[[], float] = time.monotonic,
                 on_close: Callable[["StreamSession"], None] | None = None) -> None:
        self.stream_id = stream_id
        self.options = options or StreamOptions()
        self.policy = self.options.policy
        self._tracker: Tracker | None = tracker
        cap = tracker.settings.max_objects
        self.objects = ObjectTable(min(cap, self.options.max_objects or cap))
        self.counters = StreamCounters()
        self.frame_hw: tuple[int, int] | None = None
        self.closed_reason: str | None = None
        self._clock = clock
        self._on_output = on_output
        self._on_close = on_close
        self._infer_lock = inference_lock or contextlib.nullcontext()
        self._cond = threading.Condition()            # counters, closed_reason, _unread_results
        self._unread_results = 0
        self.last_active = clock()
        self._outputs: Outbox[Output] | None = None
        self._executor: InlineExecutor | WorkerExecutor
        if threaded:
            self._outputs = Outbox()
            inbox = Inbox(latest_frame_wins=self.options.latest_frame_wins, max_waiting=self.options.max_waiting,
                          max_controls=self.options.max_waiting_controls)
            self._executor = WorkerExecutor(self._handle, inbox, name=f"s3rt-stream-{stream_id}")
        else:
            self._executor = InlineExecutor(self._handle)

    @property
    def threaded(self) -> bool:
        return self._executor.threaded

    # -- frames ------------------------------------------------------------------------------------
    def set_deadline(self, deadline_ms: float | None) -> None:
        """Change the frame deadline of a live stream (a ROS parameter set at run time); frames
        taken after this use it. The policy is immutable, so it is swapped whole."""
        self.options = dataclasses.replace(self.options, deadline_ms=deadline_ms)
        self.policy = self.options.policy

    def submit(self, frame: np.ndarray, seq: int, capture_ts: float | None = None) -> Future:
        """Hand a frame to the stream. Its output arrives as an output with this `seq` (threaded) and
        resolves the returned Future (at once in synchronous mode)."""
        item = self._frame_item(frame, seq, capture_ts)
        replaced = self._executor.put(item)
        with self._cond:
            self.counters.received += 1
        if replaced is not None:
            self._finish(replaced, self._drop(replaced, self.policy.superseded(seq)))
        return item.future

    def process(self, frame: np.ndarray, seq: int, capture_ts: float | None = None) -> Output:
        """Submit a frame and wait for its output (synchronous mode: handled on this thread)."""
        return self.submit(frame, seq, capture_ts).result()

    # -- controls (ordered with frames) ----------------------------------------------------------
    def control(self, control: Control, *, frame: np.ndarray | None = None, seq: int = -1,
                capture_ts: float | None = None, request_id: int | None = None) -> Future:
        """Queue a control; the Future resolves to its ControlReply or raises its typed error.

        Add/update need the `frame` their mask belongs to. Threaded mode: the reply is also an
        output, in order with the frames around it.
        """
        if not isinstance(control, (AddObjects, UpdateObjects, RemoveObjects, Reset)):
            raise StateError(f"unknown control {type(control).__name__}; one of AddObjects, UpdateObjects, "
                             "RemoveObjects, Reset")
        needs_frame = isinstance(control, (AddObjects, UpdateObjects))
        if needs_frame and frame is None:
            raise StateError(f"{control.op} needs the frame its mask belongs to")
        self._check_open()
        frame_item = self._frame_item(frame, seq, capture_ts) if needs_frame else None
        item = ControlItem(control, request_id=request_id, received=self._clock(), frame=frame_item)
        self.last_active = item.received
        self._executor.put(item)
        return item.future

    def add_objects(self, mask: np.ndarray, frame: np.ndarray, *, ids: Mapping[int, ObjectId] | None = None,
                    labels: Mapping[ObjectId, int] | None = None, seq: int = -1, capture_ts: float | None = None,
                    request_id: int | None = None) -> ControlReply:
        """Start tracking new objects (AddObjects) and wait for the reply; it holds the id -> label
        map and the frame's result."""
        return self.control(AddObjects(mask, ids, labels), frame=frame, seq=seq, capture_ts=capture_ts,
                            request_id=request_id).result()

    def update_objects(self, mask: np.ndarray, frame: np.ndarray, *, ids: Mapping[int, ObjectId] | None = None,
                       seq: int = -1, capture_ts: float | None = None, request_id: int | None = None) -> ControlReply:
        """Re-give the masks of tracked objects on `frame` (others keep their prediction)."""
        return self.control(UpdateObjects(mask, ids), frame=frame, seq=seq, capture_ts=capture_ts,
                            request_id=request_id).result()

    def remove_objects(self, ids: Sequence[ObjectId], *, request_id: int | None = None) -> ControlReply:
        return self.control(RemoveObjects(tuple(ids)), request_id=request_id).result()

    def reset(self, *, request_id: int | None = None) -> ControlReply:
        """Forget every object and the memory; buffers stay allocated for same-sized frames."""
        return self.control(Reset(), request_id=request_id).result()

    def report(self, out: FrameFailed | ControlReply, *, with_frame: bool = True) -> Future:
        """Emit an outcome a transport decided (e.g. an undecodable frame), in order with the rest.

        `with_frame`: the outcome stands for a received frame (counted received + failed).
        """
        self._check_open()
        self.last_active = self._clock()
        item = DecidedItem(out, with_frame)
        self._executor.put(item)
        return item.future

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item given so far is handled; False on timeout."""
        return self._executor.drain(timeout)

    # -- outputs -----------------------------------------------------------------------------------
    def next_output(self, timeout: float | None = None) -> Output | None:
        """The next output (threaded mode); None on timeout or after the stream closed and drained."""
        if self._outputs is None:
            raise StateError("a synchronous session hands each output back from the call that made it")
        out = self._outputs.get(timeout)
        if _carries_result(out):
            with self._cond:
                self._unread_results -= 1
                self._cond.notify_all()
        return out

    def __iter__(self) -> Iterator[Output]:
        """Outputs until the stream is closed and drained."""
        while True:
            out = self.next_output()
            if out is None:
                return
            yield out

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    @property
    def state_bytes(self) -> int:
        tracker = self._tracker
        return tracker.buffer_nbytes() if tracker is not None else 0

    def close(self, reason: str = "closed by client") -> None:
        """Stop: waiting frames are dropped (CLOSED), waiting controls fail, the tracker is released."""
        with self._cond:
            if self.closed_reason is not None:
                return
            self.closed_reason = reason
            self._cond.notify_all()                 # a worker waiting for the reader gives up
        for item in self._executor.close():
            match item:
                case FrameItem():
                    self._finish(item, self._drop(item, Verdict(DropReason.CLOSED, reason)))
                case ControlItem(control=control):
                    err = StreamClosedError(f"stream {self.stream_id} closed before this {control.op} ran: {reason}")
                    _fail(item.future, err)
                    self._emit(ControlReply(op=control.op, request_id=item.request_id, ok=False,
                                            error=type(err).__name__, message=str(err)))
                case DecidedItem():
                    _fail(item.future, StreamClosedError(reason))
        self._tracker = None                        # frees the state buffers (the backend stays open)
        if self._outputs is not None:
            self._outputs.end()
        if self._on_close is not None:
            self._on_close(self)
        log.info("stream closed", extra={"stream": self.stream_id, "event": "close", "reason": reason})

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the handler both executors run ----------------------------------------------------------
    def _handle(self, item: Item) -> None:
        try:
            match item:
                case FrameItem():
                    out = self._handle_frame(item)
                case ControlItem():
                    out = self._handle_control(item)
                case DecidedItem():
                    out = self._handle_decided(item)
        except Exception as exc:  # noqa: BLE001 - the stream survives anything: the error is its output
            log.exception("stream %s: unexpected error", self.stream_id)
            if isinstance(item, ControlItem):
                out = ControlReply(op=item.control.op, request_id=item.request_id, ok=False,
                                   error=type(exc).__name__, message=str(exc))
            else:
                seq = item.seq if isinstance(item, FrameItem) else -1
                out = FrameFailed(seq, getattr(item, "capture_ts", 0.0), type(exc).__name__, str(exc))
            if not item.future.done():                # a caller waiting for this item (process()) gets the error
                _fail(item.future, exc)
        self.last_active = self._clock()            # a stream still working through its inbox is not idle
        self._finish(item, out)

    def _handle_frame(self, item: FrameItem) -> Output:
        self._wait_for_reader(is_control=False)
        now = self._clock()
        verdict = self.policy.at_dequeue(item, now, self._unread_results)
        if verdict is not None:
            return self._drop(item, verdict, now=now)
        if self._tracker is None:
            return self._drop(item, Verdict(DropReason.CLOSED, self.closed_reason or "closed"))
        if not len(self.objects):
            return self._drop(item, Verdict(DropReason.NO_OBJECTS, "no objects tracked: add objects with a mask first"))
        try:
            frame = self._check_frame(item.frame)
        except S3rtError as exc:
            with self._cond:
                self.counters.failed += 1
            return FrameFailed(item.seq, item.capture_ts, type(exc).__name__, str(exc))
        return self._step(item, frame, now)

    def _handle_control(self, item: ControlItem) -> ControlReply:
        self._wait_for_reader(is_control=item.frame is not None)
        with self._cond:
            self.counters.controls += 1
            self.counters.received += item.frame is not None
        try:
            if self._tracker is None:
                raise StreamClosedError(f"stream {self.stream_id} is closed: {self.closed_reason}")
            reply = self._apply(item)
        except S3rtError as exc:
            with self._cond:
                self.counters.control_errors += 1
                self.counters.failed += item.frame is not None
            if isinstance(item.control, AddObjects):       # a refused add drops its ids' reservations
                self.objects.unreserve([*(item.control.ids or {}).values(), *(item.control.labels or {})])
            _fail(item.future, exc)
            return ControlReply(op=item.control.op, request_id=item.request_id, ok=False, error=type(exc).__name__,
                                message=str(exc), labels=self.objects.labels)
        item.future.set_result(reply)
        return reply

    def _handle_decided(self, item: DecidedItem) -> Output:
        out = item.output
        with self._cond:
            self.counters.received += item.with_frame
            self.counters.failed += item.with_frame
            if isinstance(out, ControlReply):
                self.counters.controls += 1
                self.counters.control_errors += not out.ok
        return out

    def _apply(self, item: ControlItem) -> ControlReply:
        """Check everything, then change the object table and tracker (a refused op changes nothing)."""
        tracker = self._tracker
        assert tracker is not None
        rid = item.request_id
        match item.control:
            case Reset():
                tracker.reset()
                self.objects.clear()
                return ControlReply(op="reset", request_id=rid, ok=True, labels={})
            case RemoveObjects(ids=ids):
                users = self.objects.check_known(ids)
                if not users:
                    raise ObjectIdError("remove: no object ids given")
                tracker.remove_objects([self.objects.label_of(u) for u in users])
                self.objects.release(users)
                return ControlReply(op="remove", request_id=rid, ok=True, labels=self.objects.labels)
            case AddObjects() | UpdateObjects() as control:
                return self._apply_mask(control, item.frame, tracker, rid)
        raise StateError(f"unknown control {item.control!r}")

    def _apply_mask(self, control: AddObjects | UpdateObjects, frame_item: FrameItem | None, tracker: Tracker,
                    request_id: int | None) -> ControlReply:
        assert frame_item is not None
        frame = self._check_frame(frame_item.frame)
        mask, value_ids = request_mask(control.mask, control.ids, frame.shape[:2],
                                       max_objects=self.objects.max_objects)
        users = list(value_ids.values())
        labels = control.labels if isinstance(control, AddObjects) else None
        new: list[ObjectId] = []
        if isinstance(control, AddObjects):
            new = self.objects.check_new(users, labels)
            if tracker.bucket_count >= tracker.settings.max_buckets:
                raise CapacityError(f"objects were added on {tracker.bucket_count} different frames already "
                                    f"(max_buckets={tracker.settings.max_buckets}); add objects together or "
                                    "remove old ones first")
        else:
            self.objects.check_known(users)
        self.objects.assign(new, labels)
        try:
            label_mask = relabel(mask, {v: self.objects.label_of(u) for v, u in value_ids.items()})
            result = self._step(frame_item, frame, self._clock(), mask=label_mask,
                                labels=[self.objects.label_of(u) for u in users], request_id=request_id)
        except BaseException:
            self.objects.release(new)
            raise
        return ControlReply(op=control.op, request_id=request_id, ok=True, labels=self.objects.labels, result=result)

    def _step(self, item: FrameItem, frame: np.ndarray, dequeued: float, *, mask: np.ndarray | None = None,
              labels: list[int] | None = None, request_id: int | None = None) -> Result:
        tracker = self._tracker
        assert tracker is not None
        t0 = time.perf_counter()
        with self._infer_lock:
            res = tracker.step(frame, mask=mask, object_ids=labels)
        t1 = time.perf_counter()
        image = label_image(res.probabilities, res.object_ids)     # (N+1, H0, W0) -> (H0, W0)
        stats = object_stats(image, self.objects.labels, res.probabilities, res.object_ids)
        t2 = time.perf_counter()
        self.frame_hw = frame.shape[:2]
        with self._cond:
            self.counters.processed += 1
        return Result(seq=item.seq, capture_ts=item.capture_ts, labels=image, objects=stats,
                      timing=Timing(queue_ms=(dequeued - item.received) * 1000, inference_ms=(t1 - t0) * 1000,
                                    encode_ms=(t2 - t1) * 1000),
                      frame_index=res.index, memory_written=res.memory_written, request_id=request_id)

    # -- helpers -----------------------------------------------------------------------------------
    def _frame_item(self, frame: np.ndarray, seq: int, capture_ts: float | None) -> FrameItem:
        self._check_open()
        now = self._clock()
        self.last_active = now
        return FrameItem(frame=frame, seq=int(seq), capture_ts=time.time() if capture_ts is None else float(capture_ts),
                         received=now)

    def _check_frame(self, frame: Any) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            got = f"{frame.dtype} array" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ShapeError(f"frame: expected a uint8 RGB array (H, W, 3), got {got}")
        frame = check_frame(frame)
        if self.frame_hw is not None and frame.shape[:2] != self.frame_hw:
            raise ShapeError(f"frame is {frame.shape[0]}x{frame.shape[1]} but this stream's frames are "
                             f"{self.frame_hw[0]}x{self.frame_hw[1]}; open a new stream for another size")
        return frame

    def _wait_for_reader(self, *, is_control: bool) -> None:
        """Block the worker while the client has too many results unread (see DropPolicy)."""
        with self._cond:
            while (self.closed_reason is None
                   and self.policy.waits_for_reader(self._unread_results, is_control=is_control)):
                self._cond.wait(0.5)

    def _drop(self, item: FrameItem, verdict: Verdict, *, now: float | None = None) -> Dropped:
        with self._cond:
            self.counters.dropped[verdict.reason.value] += 1
        waited = ((self._clock() if now is None else now) - item.received) * 1000
        return Dropped(seq=item.seq, capture_ts=item.capture_ts, reason=verdict.reason, detail=verdict.detail,
                       queue_ms=waited)

    def _finish(self, item: Item, out: Output) -> None:
        if not item.future.done():
            item.future.set_result(out)
        self._emit(out)

    def _emit(self, out: Output) -> None:
        if self._on_output is not None:
            try:
                self._on_output(self, out)
            except Exception:  # noqa: BLE001 - an observer (metrics, logs) must not break the stream
                log.exception("stream %s: output observer failed", self.stream_id)
        if self._outputs is None:
            return
        if _carries_result(out):
            with self._cond:
                self._unread_results += 1
        self._outputs.put(out)
        if self.closed_reason is None and self.policy.reader_gone(len(self._outputs)):
            self.close(f"the client stopped reading: {len(self._outputs)} outputs unread")

    def _check_open(self) -> None:
        if self.closed_reason is not None:
            raise StreamClosedError(f"stream {self.stream_id} is closed ({self.closed_reason}); open a new one")


def _carries_result(out: Output | None) -> bool:
    return isinstance(out, Result) or (isinstance(out, ControlReply) and out.result is not None)


def _fail(future: Future, exc: BaseException) -> None:
    """Resolve `future` with `exc`, without its traceback: the traceback's frames hold the item (its
    frame and mask, megabytes) and the item holds the future, a cycle only the cyclic GC would free."""
    future.set_exception(exc.with_traceback(None))
