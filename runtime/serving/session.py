"""`StreamSession`: one camera stream = one tracker, its fixed buffers and the real-time policy.

Two ways to drive it (chosen at construction):
- threaded (serving): `submit()` frames and call controls from any thread; a worker thread handles
  them in order, and every outcome arrives through `next_output()` / iteration.
- synchronous (offline replay, tests): `process()` handles a frame on the caller's thread and
  returns its output; controls apply at once. Nothing is dropped unless the deadline says so.

Dropped frames never reach the tracker, so they are never written to memory. A frame that
comes with an add/update mask is part of that control: it is never superseded or dropped.

Outputs wait in the stream until the client reads them, and a client may stall: the unread ones
are bounded. With `max_unread_results` results unread, a latest-frame-wins stream drops the next
frames (reason "backlog", nothing computed) and an every-frame stream's worker waits for the reader
(the inbox fills, then `submit` blocks); a latest-frame-wins stream whose unread outputs (drop
notices included) reach `max_unread_outputs` is closed, since its client is gone or hung.
"""

from __future__ import annotations

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
from s3rt.runtime.serving.inbox import ControlItem, FrameItem, Inbox
from s3rt.runtime.serving.messages import (ControlReply, Dropped, DropReason, FrameFailed, ObjectId, Output,
                                           Result, Timing)
from s3rt.runtime.serving.objects import ObjectTable, label_image, object_stats, relabel, request_mask
from s3rt.runtime.serving.outbox import Outbox
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
    max_objects: this stream's object limit (None: the tracker's capacity).
    max_unread_results / max_unread_outputs: what a stalled reader may leave unread (module
      docstring); None = unbounded.
    """

    deadline_ms: float | None = 200.0
    deadline_from: str = "receive"
    latest_frame_wins: bool = True
    max_waiting: int = 8
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
        if self.deadline_ms is not None and self.deadline_ms <= 0:
            raise ConfigError(f"deadline_ms must be positive (or None for no deadline), got {self.deadline_ms}")

    @classmethod
    def every_frame(cls, **kw: Any) -> "StreamOptions":
        """Process every frame in order, no deadline: offline replay and exactness tests."""
        return cls(deadline_ms=None, latest_frame_wins=False, **kw)


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
                 inference_lock: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream_id = stream_id
        self.options = options or StreamOptions()
        self.threaded = threaded
        self._tracker: Tracker | None = tracker
        cap = tracker.settings.max_objects
        self.objects = ObjectTable(min(cap, self.options.max_objects or cap))
        self.counters = StreamCounters()
        self.frame_hw: tuple[int, int] | None = None
        self.closed_reason: str | None = None
        self._clock = clock
        self._on_output = on_output
        self._lock = threading.RLock()                 # tracker + object table (held during a step)
        self._meta = threading.Lock()                  # counters + closed flag (never held during a step)
        self._infer_lock = inference_lock or contextlib.nullcontext()
        self._inbox = Inbox(latest_frame_wins=self.options.latest_frame_wins, max_waiting=self.options.max_waiting)
        self._outputs: Outbox[Output] = Outbox()
        self._unread_results = 0                       # Results queued and not read yet (guarded by _read)
        self._read = threading.Condition()
        self.last_active = clock()
        self._worker: threading.Thread | None = None
        if threaded:
            self._worker = threading.Thread(target=self._work, name=f"s3rt-stream-{stream_id}", daemon=True)
            self._worker.start()

    # -- frames ------------------------------------------------------------------------------------
    def submit(self, frame: np.ndarray, seq: int, capture_ts: float | None = None) -> None:
        """Queue a frame (threaded mode). Its outcome arrives as an output with this `seq`."""
        self._require_threaded("submit")
        item = self._frame_item(frame, seq, capture_ts)
        replaced = self._inbox.put_frame(item)
        with self._meta:
            self.counters.received += 1
        if replaced is not None:
            self._emit(self._drop(replaced, DropReason.SUPERSEDED, f"replaced by frame {seq} before processing"))

    def process(self, frame: np.ndarray, seq: int, capture_ts: float | None = None) -> Output:
        """Handle one frame now on this thread (synchronous mode) and return its output."""
        self._require_sync("process")
        item = self._frame_item(frame, seq, capture_ts)
        with self._meta:
            self.counters.received += 1
        out = self._handle_frame(item)
        self._emit(out, queue_it=False)
        return out

    # -- controls (ordered with frames) ----------------------------------------------------------
    def add_objects(self, mask: np.ndarray, frame: np.ndarray, *, ids: Mapping[int, ObjectId] | None = None,
                    labels: Mapping[ObjectId, int] | None = None, seq: int = -1, capture_ts: float | None = None,
                    request_id: int | None = None) -> ControlReply:
        """Start tracking new objects: `mask` (H0, W0) index mask on `frame`; `ids` maps mask values to
        user ids (None: the values are the ids). `labels`: wanted id -> label (free ones; default:
        smallest free). The reply holds the id -> label map and the frame's result."""
        return self.control("add", mask=mask, ids=ids, labels=labels, frame=frame, seq=seq, capture_ts=capture_ts,
                            request_id=request_id).result()

    def update_objects(self, mask: np.ndarray, frame: np.ndarray, *, ids: Mapping[int, ObjectId] | None = None,
                       seq: int = -1, capture_ts: float | None = None, request_id: int | None = None) -> ControlReply:
        """Re-give the masks of tracked objects on `frame` (others keep their prediction)."""
        return self.control("update", mask=mask, ids=ids, frame=frame, seq=seq, capture_ts=capture_ts,
                            request_id=request_id).result()

    def remove_objects(self, ids: Sequence[ObjectId], *, request_id: int | None = None) -> ControlReply:
        return self.control("remove", ids=list(ids), request_id=request_id).result()

    def reset(self, *, request_id: int | None = None) -> ControlReply:
        """Forget every object and the memory; buffers stay allocated for same-sized frames."""
        return self.control("reset", request_id=request_id).result()

    def control(self, op: str, *, request_id: int | None = None, **args: Any) -> Future:
        """Queue a control op; the Future resolves to its ControlReply or raises its typed error.

        Threaded mode: also emitted as an output, in order with the frames around it.
        """
        if op not in ("add", "update", "remove", "reset"):
            raise StateError(f"unknown control op {op!r}; one of add, update, remove, reset")
        future: Future = Future()
        frame_item = None
        if op in ("add", "update"):
            frame_item = self._frame_item(args.pop("frame"), args.pop("seq"), args.pop("capture_ts"))
        item = ControlItem(op=op, args=args, future=future, request_id=request_id, received=self._clock(),
                           frame=frame_item)
        self.last_active = item.received
        if self.threaded:
            self._inbox.put_control(item)
        else:
            self._check_open()
            self._emit(self._handle_control(item), queue_it=False)
        return future

    def report(self, out: FrameFailed | ControlReply, *, with_frame: bool = True) -> Output | None:
        """Emit an outcome a transport decided (e.g. an undecodable frame), in order with the rest.

        `with_frame`: the outcome stands for a received frame (counted received + failed).
        """
        self._check_open()
        with self._meta:
            self.counters.received += int(with_frame)
        item = ControlItem(op="report", args={"output": out, "with_frame": with_frame}, future=Future(),
                           received=self._clock())
        self.last_active = item.received
        if self.threaded:
            self._inbox.put_control(item)
            return None
        self._emit(self._reported(item), queue_it=False)
        return out

    def _reported(self, item: ControlItem) -> Output:
        out = item.args["output"]
        with self._meta:
            if item.args["with_frame"]:
                self.counters.failed += 1
            if isinstance(out, ControlReply):
                self.counters.controls += 1
                self.counters.control_errors += int(not out.ok)
        return out

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted so far is handled (threaded mode); False on timeout."""
        if not self.threaded:
            return True
        future: Future = Future()
        try:
            self._inbox.put_control(ControlItem(op="sync", args={}, future=future, received=self._clock()))
        except StreamClosedError:
            return True
        try:
            future.result(timeout)
        except Exception:  # noqa: BLE001 - timeout, or closed while waiting: nothing more will run
            return future.done()
        return True

    # -- outputs -----------------------------------------------------------------------------------
    def next_output(self, timeout: float | None = None) -> Output | None:
        """The next output (threaded mode); None on timeout or after the stream closed and drained."""
        out = self._outputs.get(timeout)
        if isinstance(out, Result):
            with self._read:
                self._unread_results -= 1
                self._read.notify_all()
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

    def close(self, reason: str = "closed by client", *, timeout: float = 10.0) -> None:
        """Stop: waiting frames are dropped (CLOSED), waiting controls fail, the tracker is released."""
        with self._meta:
            if self.closed_reason is not None:
                return
            self.closed_reason = reason
        left = self._inbox.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)
        for item in left:
            if isinstance(item, FrameItem):
                self._emit(self._drop(item, DropReason.CLOSED, reason))
            elif item.op in ("sync", "report"):
                item.future.set_exception(StreamClosedError(reason))
            else:
                err = StreamClosedError(f"stream {self.stream_id} closed before this {item.op} ran: {reason}")
                item.future.set_exception(err)
                self._emit(ControlReply(op=item.op, request_id=item.request_id, ok=False,
                                        error=type(err).__name__, message=str(err)))
        with self._read:
            self._read.notify_all()                 # a worker waiting for the reader gives up
        with self._lock:
            self._tracker = None                    # frees the state buffers (the backend stays open)
        self._outputs.end()
        log.info("stream closed", extra={"stream": self.stream_id, "event": "close", "reason": reason})

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            if isinstance(item, ControlItem) and item.op == "sync":
                item.future.set_result(None)
                continue
            if isinstance(item, ControlItem) and item.op == "report":
                self._emit(self._reported(item))
                continue
            try:
                out = self._handle_frame(item) if isinstance(item, FrameItem) else self._handle_control(item)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything; the error is reported
                log.exception("stream %s: unexpected error", self.stream_id)
                out = (FrameFailed(item.seq, item.capture_ts, type(exc).__name__, str(exc))
                       if isinstance(item, FrameItem) else
                       ControlReply(op=item.op, request_id=item.request_id, ok=False, error=type(exc).__name__,
                                    message=str(exc)))
                if isinstance(item, ControlItem) and not item.future.done():
                    item.future.set_exception(exc)
            self.last_active = self._clock()        # a stream still working through its inbox is not idle
            self._emit(out)

    def _frame_item(self, frame: np.ndarray, seq: int, capture_ts: float | None) -> FrameItem:
        self._check_open()
        now = self._clock()
        self.last_active = now
        return FrameItem(frame=frame, seq=int(seq), capture_ts=time.time() if capture_ts is None else float(capture_ts),
                         received=now)

    def _handle_frame(self, item: FrameItem) -> Output:
        limit = self.options.max_unread_results
        if self.threaded and limit is not None:
            with self._read:
                if self.options.latest_frame_wins:
                    if self._unread_results >= limit:
                        return self._drop(item, DropReason.BACKLOG,
                                          f"{self._unread_results} results not read by the client yet")
                else:                                   # every frame in order: wait for the reader
                    while self._unread_results >= limit and self.closed_reason is None:
                        self._read.wait(0.5)
        now = self._clock()
        deadline = self.options.deadline_ms
        if deadline is not None:
            age_ms = ((time.time() - item.capture_ts) if self.options.deadline_from == "capture"
                      else (now - item.received)) * 1000
            if age_ms > deadline:
                return self._drop(item, DropReason.DEADLINE, f"{age_ms:.0f} ms old at dequeue, deadline {deadline:g} ms",
                                  now=now)
        with self._lock:
            if self._tracker is None:
                return self._drop(item, DropReason.CLOSED, self.closed_reason or "closed")
            if not len(self.objects):
                return self._drop(item, DropReason.NO_OBJECTS, "no objects tracked: add objects with a mask first")
            try:
                frame = self._check_frame(item.frame)
            except S3rtError as exc:
                with self._meta:
                    self.counters.failed += 1
                return FrameFailed(item.seq, item.capture_ts, type(exc).__name__, str(exc))
            return self._step(item, frame, now)

    def _handle_control(self, item: ControlItem) -> ControlReply:
        with self._meta:
            self.counters.controls += 1
            if item.frame is not None:
                self.counters.received += 1
        with self._lock:
            try:
                if self._tracker is None:
                    raise StreamClosedError(f"stream {self.stream_id} is closed: {self.closed_reason}")
                reply = self._apply(item)
            except S3rtError as exc:
                with self._meta:
                    self.counters.control_errors += 1
                    if item.frame is not None:
                        self.counters.failed += 1
                reply = ControlReply(op=item.op, request_id=item.request_id, ok=False, error=type(exc).__name__,
                                     message=str(exc), labels=self.objects.labels)
                item.future.set_exception(exc)
                return reply
        item.future.set_result(reply)
        return reply

    def _apply(self, item: ControlItem) -> ControlReply:
        """Check everything, then change the object table and tracker (a refused op changes nothing)."""
        tracker = self._tracker
        assert tracker is not None
        op, args = item.op, item.args
        if op == "reset":
            tracker.reset()
            self.objects.clear()
            return ControlReply(op=op, request_id=item.request_id, ok=True, labels={})
        if op == "remove":
            users = self.objects.check_known(args["ids"])
            if not users:
                raise ObjectIdError("remove: no object ids given")
            tracker.remove_objects([self.objects.label_of(u) for u in users])
            self.objects.release(users)
            return ControlReply(op=op, request_id=item.request_id, ok=True, labels=self.objects.labels)
        frame_item = item.frame
        assert frame_item is not None
        frame = self._check_frame(frame_item.frame)
        mask, value_ids = request_mask(args["mask"], args.get("ids"), frame.shape[:2])
        users = list(value_ids.values())
        new: list[ObjectId] = []
        if op == "add":
            new = self.objects.check_new(users, args.get("labels"))
            if tracker.bucket_count >= tracker.settings.max_buckets:
                raise CapacityError(f"objects were added on {tracker.bucket_count} different frames already "
                                    f"(max_buckets={tracker.settings.max_buckets}); add objects together or "
                                    "remove old ones first")
        else:
            self.objects.check_known(users)
        self.objects.assign(new, args.get("labels"))
        try:
            label_mask = relabel(mask, {v: self.objects.label_of(u) for v, u in value_ids.items()})
            result = self._step(frame_item, frame, self._clock(), mask=label_mask,
                                labels=[self.objects.label_of(u) for u in users], request_id=item.request_id)
        except BaseException:
            self.objects.release(new)
            raise
        return ControlReply(op=op, request_id=item.request_id, ok=True, labels=self.objects.labels, result=result)

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
        with self._meta:
            self.counters.processed += 1
        return Result(seq=item.seq, capture_ts=item.capture_ts, labels=image, objects=stats,
                      timing=Timing(queue_ms=(dequeued - item.received) * 1000, inference_ms=(t1 - t0) * 1000,
                                    encode_ms=(t2 - t1) * 1000),
                      frame_index=res.index, memory_written=res.memory_written, request_id=request_id)

    def _check_frame(self, frame: Any) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            got = f"{frame.dtype} array" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ShapeError(f"frame: expected a uint8 RGB array (H, W, 3), got {got}")
        frame = check_frame(frame)
        if self.frame_hw is not None and frame.shape[:2] != self.frame_hw:
            raise ShapeError(f"frame is {frame.shape[0]}x{frame.shape[1]} but this stream's frames are "
                             f"{self.frame_hw[0]}x{self.frame_hw[1]}; open a new stream for another size")
        return frame

    def _drop(self, item: FrameItem, reason: DropReason, detail: str, *, now: float | None = None) -> Dropped:
        with self._meta:
            self.counters.dropped[reason.value] += 1
        waited = ((self._clock() if now is None else now) - item.received) * 1000
        return Dropped(seq=item.seq, capture_ts=item.capture_ts, reason=reason, detail=detail, queue_ms=waited)

    def _emit(self, out: Output, *, queue_it: bool = True) -> None:
        if self._on_output is not None:
            try:
                self._on_output(self, out)
            except Exception:  # noqa: BLE001 - an observer (metrics, logs) must not break the stream
                log.exception("stream %s: output observer failed", self.stream_id)
        if queue_it and self.threaded:
            if isinstance(out, Result):
                with self._read:
                    self._unread_results += 1
            self._outputs.put(out)
            limit = self.options.max_unread_outputs
            if (limit is not None and self.options.latest_frame_wins and self.closed_reason is None
                    and len(self._outputs) >= limit):
                self.close(f"the client stopped reading: {len(self._outputs)} outputs unread")

    def _check_open(self) -> None:
        if self.closed_reason is not None:
            raise StreamClosedError(f"stream {self.stream_id} is closed ({self.closed_reason}); open a new one")

    def _require_threaded(self, what: str) -> None:
        if not self.threaded:
            raise StateError(f"{what}() needs a threaded session; use process() on a synchronous one")

    def _require_sync(self, what: str) -> None:
        if self.threaded:
            raise StateError(f"{what}() runs frames on the caller's thread; this session is threaded, use submit()")
