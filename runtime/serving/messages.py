"""What a stream session hands back: results, drops, frame errors and control replies.

Every frame submitted to a session yields exactly one output carrying its `seq`: a `Result`
(processed), a `Dropped` (never processed, with a reason) or a `FrameFailed` (bad input). Every
control operation yields one `ControlReply`. Outputs of one stream are emitted in the order the
session handled the items, which is the order they were submitted in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Union

import numpy as np

ObjectId = Union[str, int]          # the user's object id; mapped to a label value 1..N_max


class DropReason(str, Enum):
    """Why a frame was not processed (the value is what transports and metrics print)."""

    SUPERSEDED = "superseded"       # overwritten in the depth-1 slot by a newer frame (latest frame wins)
    DEADLINE = "deadline"           # older than the stream's deadline when it was dequeued
    NO_OBJECTS = "no_objects"       # nothing tracked yet (or every object removed): nothing to segment
    CLOSED = "closed"               # the stream was closed before the frame was processed
    BACKLOG = "backlog"             # the client had not read its last results yet (slow or stalled reader)


@dataclass(frozen=True)
class Timing:
    """Server-side milliseconds for one frame: receipt -> dequeue, tracker step, label image + stats."""

    queue_ms: float
    inference_ms: float
    encode_ms: float

    @property
    def total_ms(self) -> float:
        return self.queue_ms + self.inference_ms + self.encode_ms


@dataclass(frozen=True)
class ObjectStat:
    """One tracked object in one result. `box` = (x0, y0, x1, y1), end-exclusive; None if not visible.

    `score`: mean probability of the object inside its own mask (None when not visible or not
    computed; not sent over gRPC), what a detection message reports as its confidence.
    """

    id: ObjectId
    label: int
    area: int
    box: tuple[int, int, int, int] | None
    score: float | None = None

    @property
    def visible(self) -> bool:
        return self.area > 0


@dataclass(frozen=True)
class Result:
    """A processed frame: label image (H0, W0) uint8 (uint16 once a label exceeds 255), 0 = background."""

    seq: int
    capture_ts: float
    labels: np.ndarray
    objects: tuple[ObjectStat, ...]
    timing: Timing
    frame_index: int                 # the tracker's frame counter (processed frames since open/reset)
    memory_written: bool
    request_id: int | None = None    # set when the frame came with an add/update control

    @property
    def label_map(self) -> dict[ObjectId, int]:
        return {o.id: o.label for o in self.objects}


@dataclass(frozen=True)
class Dropped:
    """A frame never processed. `queue_ms`: how long it waited between receipt and the drop."""

    seq: int
    capture_ts: float
    reason: DropReason
    detail: str = ""
    queue_ms: float = 0.0


@dataclass(frozen=True)
class FrameFailed:
    """A frame refused or failed (corrupt, wrong shape/encoding): the stream goes on."""

    seq: int
    capture_ts: float
    error: str                       # the error class name, e.g. "ShapeError"
    message: str


@dataclass(frozen=True)
class ControlReply:
    """Outcome of add/update/remove/reset. `labels` is the full id -> label map after the operation."""

    op: str
    request_id: int | None
    ok: bool
    labels: dict[ObjectId, int] = field(default_factory=dict)
    error: str = ""
    message: str = ""
    result: Result | None = None     # add/update: the result of the frame the mask came with


Output = Union[Result, Dropped, FrameFailed, ControlReply]
