"""Real-time policy over a synchronous session: latest frame wins, deadline drops at dequeue.

Interim stand-in for the serving core's policy (same rules, so replay and node behave as they
will there): one worker thread, a depth-1 slot — a frame still waiting when a newer one arrives
is dropped ("superseded") — and a frame that waited longer than ``deadline_ms`` when the worker
takes it is dropped ("deadline"), never processed late. At most one frame is in flight. Dropped
frames never reach the tracker, so they are never written to memory. Object changes and reset
wait for the frame in flight, so they apply between frames.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping

import numpy as np

from s3rt.errors import StateError
from s3rt.runtime.ros.session import Outcome, Session


class RealtimeSession:
    """Wraps a Session whose ``process`` is synchronous; ``submit``/``poll`` add the policy."""

    def __init__(self, inner: Session, *, deadline_ms: float | None = None) -> None:
        self.inner = inner
        self.deadline_ms = deadline_ms if deadline_ms else None
        self._cv = threading.Condition()
        self._run = threading.Lock()                  # held while the tracker runs a frame
        self._slot: tuple[np.ndarray, int, int, float] | None = None
        self._out: deque[Outcome] = deque()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="s3rt-realtime", daemon=True)
        self._worker.start()

    # -- control: between frames -----------------------------------------------------------------
    def add_objects(self, masks: Mapping[str, np.ndarray]) -> dict[str, int]:
        with self._run:
            return self.inner.add_objects(masks)

    def add_index_mask(self, mask: np.ndarray) -> dict[str, int]:
        with self._run:
            return self.inner.add_index_mask(mask)

    def remove_object(self, object_id: str) -> None:
        with self._run:
            self.inner.remove_object(object_id)

    def reset(self) -> None:
        with self._run:
            self.inner.reset()

    def process(self, frame: np.ndarray, seq: int, capture_ns: int) -> Outcome:
        with self._run:
            return self.inner.process(frame, seq, capture_ns)

    # -- frames under the policy -----------------------------------------------------------------
    def submit(self, frame: np.ndarray, seq: int, capture_ns: int) -> None:
        now = time.perf_counter()
        with self._cv:
            if self._closed:
                raise StateError("submit() on a closed session")
            if self._slot is not None:
                _, old_seq, old_ns, t_old = self._slot
                self._out.append(Outcome(old_seq, old_ns, dropped="superseded", queue_ms=(now - t_old) * 1000))
            self._slot = (frame, seq, capture_ns, now)
            self._cv.notify_all()

    def poll(self, timeout_s: float = 0.0) -> list[Outcome]:
        with self._cv:
            if not self._out and timeout_s > 0:
                self._cv.wait(timeout_s)
            out = list(self._out)
            self._out.clear()
        return sorted(out, key=lambda o: o.seq)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                frame, seq, capture_ns, t_in = self._slot   # type: ignore[misc]
                self._slot = None
            queue_ms = (time.perf_counter() - t_in) * 1000
            if self.deadline_ms is not None and queue_ms > self.deadline_ms:
                outcome = Outcome(seq, capture_ns, dropped="deadline", queue_ms=queue_ms)
            else:
                with self._run:
                    outcome = self.inner.process(frame, seq, capture_ns)
                outcome.queue_ms = queue_ms
                outcome.e2e_ms = (time.perf_counter() - t_in) * 1000
            with self._cv:
                self._out.append(outcome)
                self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._worker.join(timeout=10)
        self.inner.close()
