"""A FIFO of outputs that can be ended, shared by the session core and the gRPC client.

Readers poll with a timeout and never see the end marker itself: a timeout and the end both read
as None. The marker stays in the queue, so every reader (and every later call) sees the end, not
only the first.
"""

from __future__ import annotations

import queue
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class Outbox(Generic[T]):
    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def __len__(self) -> int:
        """Items waiting (approximate while other threads put or get; the end marker counts as one)."""
        return self._queue.qsize()

    def end(self) -> None:
        """No more items after those already put; readers drain them, then get None."""
        self._queue.put(_END)

    def get(self, timeout: float | None = None) -> T | None:
        """The next item; None on timeout, or once ended and drained."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            self._queue.put(_END)             # keep the marker for other readers
            return None
        return item
