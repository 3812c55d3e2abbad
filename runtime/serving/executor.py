"""Where a stream's items run: on the caller's thread (synchronous mode) or on a worker thread.

Both executors run the same handler (`StreamSession._handle`) on each item, in the order the
items were put; only the thread differs. The inline one serves offline replay and tests (a
frame's output is ready when `put` returns); the worker one serves live streams: `put` queues the
item in the stream's `Inbox` (with its real-time frame policy and bounded waiting) and returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from s3rt.errors import StreamClosedError
from s3rt.runtime.serving.inbox import FrameItem, Inbox, Item

log = logging.getLogger(__name__)


class InlineExecutor:
    """Runs each item at once on the thread that puts it."""

    threaded = False

    def __init__(self, handle: Callable[[Item], None]) -> None:
        self._handle = handle
        self._closed = False

    def put(self, item: Item) -> FrameItem | None:
        if self._closed:
            raise StreamClosedError("the stream is closed; open a new one")
        self._handle(item)
        return None

    def drain(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> list[Item]:
        self._closed = True
        return []


class WorkerExecutor:
    """Queues items in an Inbox; one daemon thread takes them in order and runs the handler."""

    threaded = True

    def __init__(self, handle: Callable[[Item], None], inbox: Inbox, *, name: str) -> None:
        self._handle = handle
        self._inbox = inbox
        self._cond = threading.Condition()
        self._put = 0                                  # items accepted so far
        self._done = 0                                 # items handled (or superseded) so far
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Item) -> FrameItem | None:
        """Queue `item` (may block: see Inbox); returns the frame it superseded, if any."""
        replaced = self._inbox.put(item)
        with self._cond:
            self._put += 1
            self._done += replaced is not None
        return replaced

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every item put so far is handled; False on timeout."""
        with self._cond:
            target = self._put
            return self._cond.wait_for(lambda: self._done >= target or self._inbox.closed, timeout)

    def close(self, timeout: float = 10.0) -> list[Item]:
        """Refuse new items, wait for the one running, return those never run."""
        left = self._inbox.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._cond:
            self._cond.notify_all()
        return left

    def _work(self) -> None:
        while (item := self._inbox.get()) is not None:
            try:
                self._handle(item)
            except Exception:  # noqa: BLE001 - the handler reports its own errors; this is a last guard
                log.exception("stream worker: unhandled error")
            with self._cond:
                self._done += 1
                self._cond.notify_all()
