"""A stream's ordered inbox: frames, controls and transport-decided outcomes, with bounded waiting.

Items leave in the order they came in. Frames obey the stream's policy:
- latest frame wins: at most one frame waits behind the one being processed; a newer frame
  replaces a waiting one, which is handed back to the caller to report as SUPERSEDED. A control
  item between them keeps the older frame (the control must see the frames before it).
- every frame: frames wait in order, and `put` blocks while `max_waiting` frames already wait
  (back-pressure for offline replay, nothing is ever dropped).
Controls are never dropped or replaced; `put` blocks while `max_controls` of them wait, so a client
that sends masks faster than they are handled is slowed down, not buffered without bound (a
transport's reader then stops reading, and the transport's flow control stops the client).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np

from s3rt.errors import StreamClosedError

if TYPE_CHECKING:
    from s3rt.runtime.serving.controls import Control
    from s3rt.runtime.serving.messages import ControlReply, FrameFailed


@dataclass
class FrameItem:
    frame: np.ndarray
    seq: int
    capture_ts: float
    received: float                     # monotonic seconds at submit
    future: Future = field(default_factory=Future, repr=False)   # resolved with the frame's output


@dataclass
class ControlItem:
    control: "Control"
    request_id: int | None = None
    received: float = 0.0
    frame: FrameItem | None = None       # the frame a mask control's mask belongs to
    future: Future = field(default_factory=Future, repr=False)   # its ControlReply, or its typed error


@dataclass
class DecidedItem:
    """An outcome a transport decided (an undecodable frame, a malformed control), kept in order."""

    output: Union["FrameFailed", "ControlReply"]
    with_frame: bool                     # it stands for a received frame (counted received + failed)
    future: Future = field(default_factory=Future, repr=False)


Item = Union[FrameItem, ControlItem, DecidedItem]


class Inbox:
    """Thread-safe FIFO of items with latest-frame-wins or back-pressure for frames."""

    def __init__(self, *, latest_frame_wins: bool, max_waiting: int = 8, max_controls: int = 2) -> None:
        self.latest_frame_wins = latest_frame_wins
        self.max_waiting = max(1, max_waiting)
        self.max_controls = max(1, max_controls)     # a mask control holds a frame and a mask: a few MB each
        self._items: deque[Item] = deque()
        self._frames = 0
        self._others = 0
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Item) -> FrameItem | None:
        """Queue an item; returns the frame it superseded (latest-frame-wins mode), if any."""
        with self._cond:
            self._check_open()
            replaced = None
            if isinstance(item, FrameItem) and self.latest_frame_wins:
                if self._items and isinstance(self._items[-1], FrameItem):
                    replaced = self._items.pop()
                    self._frames -= 1
            else:
                plain_frame = isinstance(item, FrameItem)
                limit = self.max_waiting if plain_frame else self.max_controls
                while (self._frames if plain_frame else self._others) >= limit and not self._closed:
                    self._cond.wait()
                self._check_open()
            self._items.append(item)
            self._count(item, +1)
            self._cond.notify_all()
            return replaced

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item; None when closed and empty, or on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            self._count(item, -1)
            self._cond.notify_all()
            return item

    def close(self) -> list[Item]:
        """Refuse new items; return the ones still waiting (to be reported as closed)."""
        with self._cond:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            self._frames = self._others = 0
            self._cond.notify_all()
            return left

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def _count(self, item: Item, step: int) -> None:
        if isinstance(item, FrameItem):
            self._frames += step
        else:
            self._others += step

    def _check_open(self) -> None:
        if self._closed:
            raise StreamClosedError("the stream is closed; open a new one")
