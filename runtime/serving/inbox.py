"""A stream's ordered inbox: frames and control operations, with the real-time frame policy.

Items leave in the order they came in. Frames obey the stream's policy:
- latest frame wins: at most one frame waits behind the one being processed; a newer frame
  replaces a waiting one, which is handed back to the caller to report as SUPERSEDED. A control
  item between them keeps the older frame (the control must see the frames before it).
- every frame: frames wait in order, and `put` blocks while `max_waiting` frames already wait
  (back-pressure for offline replay, nothing is ever dropped).
Controls are never dropped or replaced.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from s3rt.errors import StreamClosedError


@dataclass
class FrameItem:
    frame: np.ndarray
    seq: int
    capture_ts: float
    received: float                     # monotonic seconds at submit


@dataclass
class ControlItem:
    op: str
    args: dict[str, Any]
    future: Any                          # concurrent.futures.Future resolved with the ControlReply
    request_id: int | None = None
    received: float = 0.0
    frame: FrameItem | None = field(default=None)


Item = FrameItem | ControlItem


class Inbox:
    """Thread-safe FIFO of items with latest-frame-wins or back-pressure for frames."""

    def __init__(self, *, latest_frame_wins: bool, max_waiting: int = 8) -> None:
        self.latest_frame_wins = latest_frame_wins
        self.max_waiting = max(1, max_waiting)
        self._items: deque[Item] = deque()
        self._frames = 0
        self._closed = False
        self._cond = threading.Condition()

    def put_frame(self, item: FrameItem) -> FrameItem | None:
        """Queue a frame; returns the frame it superseded (latest-frame-wins mode), if any."""
        with self._cond:
            self._check_open()
            replaced = None
            if self.latest_frame_wins:
                if self._items and isinstance(self._items[-1], FrameItem):
                    replaced = self._items.pop()
                    self._frames -= 1
            else:
                while self._frames >= self.max_waiting and not self._closed:
                    self._cond.wait()
                self._check_open()
            self._items.append(item)
            self._frames += 1
            self._cond.notify_all()
            return replaced

    def put_control(self, item: ControlItem) -> None:
        with self._cond:
            self._check_open()
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item; None when closed and empty, or on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            if isinstance(item, FrameItem):
                self._frames -= 1
            self._cond.notify_all()
            return item

    def close(self) -> list[Item]:
        """Refuse new items; return the ones still waiting (to be reported as closed)."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._frames = 0
            self._cond.notify_all()
            return left

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosedError("the stream is closed; open a new one")
