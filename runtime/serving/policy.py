"""The real-time drop policy of a stream, in one place: supersede, backlog and deadline.

- supersede (latest frame wins): a newer frame replaces the one waiting in the depth-1 slot;
- backlog: with `max_unread_results` results unread, a latest-frame-wins stream drops the next
  frames without computing them, and an every-frame stream (or any control, which is never
  dropped) waits for the reader instead;
- deadline: a frame older than `deadline_ms` when dequeued is dropped, never processed late;
- a stream whose unread outputs (drops and errors included) reach `max_unread_outputs` is
  closed: its client is gone or hung.

Dropped frames never reach the tracker, so they are never written to memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from s3rt.runtime.serving.inbox import FrameItem
from s3rt.runtime.serving.messages import DropReason


@dataclass(frozen=True)
class Verdict:
    reason: DropReason
    detail: str


@dataclass(frozen=True)
class DropPolicy:
    latest_frame_wins: bool = True
    deadline_ms: float | None = 200.0
    deadline_from: str = "receive"           # "receive" (server clock) or "capture" (capture_ts, wall clock)
    max_unread_results: int | None = 32
    max_unread_outputs: int | None = 1024

    def superseded(self, newer_seq: int) -> Verdict:
        return Verdict(DropReason.SUPERSEDED, f"replaced by frame {newer_seq} before processing")

    def waits_for_reader(self, unread_results: int, *, is_control: bool) -> bool:
        """True while the worker must wait before handling this item (every-frame, or a control)."""
        limit = self.max_unread_results
        return (limit is not None and unread_results >= limit
                and (is_control or not self.latest_frame_wins))

    def at_dequeue(self, item: FrameItem, now: float, unread_results: int) -> Verdict | None:
        """Why a plain frame is dropped when the worker takes it, or None to process it."""
        limit = self.max_unread_results
        if self.latest_frame_wins and limit is not None and unread_results >= limit:
            return Verdict(DropReason.BACKLOG, f"{unread_results} results not read by the client yet")
        if self.deadline_ms is not None:
            age_s = (time.time() - item.capture_ts) if self.deadline_from == "capture" else (now - item.received)
            if age_s * 1000 > self.deadline_ms:
                return Verdict(DropReason.DEADLINE,
                               f"{age_s * 1000:.0f} ms old at dequeue, deadline {self.deadline_ms:g} ms")
        return None

    def reader_gone(self, unread_outputs: int) -> bool:
        limit = self.max_unread_outputs
        return limit is not None and unread_outputs >= limit
