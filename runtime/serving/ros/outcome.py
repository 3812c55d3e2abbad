"""The seam between the ROS adapters (bag replay, node) and the session core (core_session.py).

Replay and the node need five things from a stream: give objects (user ids -> labels), remove
one, reset, process a frame now (offline replay: every frame), and submit a frame under the
real-time policy (latest frame wins, deadline drops). ``Outcome`` is what comes back for every
frame: a label image with its label -> id map and timings, or a drop / error with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class Outcome:
    """The result of one submitted frame: processed (labels set), dropped or failed."""

    seq: int
    capture_ns: int
    labels: np.ndarray | None = None              # (H, W) label image, 0 = background
    ids: dict[int, str] = field(default_factory=dict)   # label -> user object id
    scores: dict[int, float] = field(default_factory=dict)   # label -> mean probability inside its mask
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    e2e_ms: float = 0.0
    dropped: str | None = None                    # a core DropReason value, e.g. "superseded", "deadline"
    error: str | None = None

    @property
    def processed(self) -> bool:
        return self.labels is not None


class Session(Protocol):
    @property
    def objects(self) -> dict[str, int]:
        """id -> label of every object tracked or given for the next frame."""

    def add_objects(self, masks: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Binary (H, W) masks by user id, applied with the next frame; returns id -> label."""

    def add_index_mask(self, mask: np.ndarray) -> dict[str, int]:
        """An index mask (value = label, id = str(value)) applied with the next frame."""

    def remove_object(self, object_id: str) -> None: ...

    def reset(self) -> None: ...

    def process(self, frame: np.ndarray, seq: int, capture_ns: int) -> Outcome:
        """Segment `frame` now (no drops): offline replay and tests."""

    def submit(self, frame: np.ndarray, seq: int, capture_ns: int) -> None:
        """Hand a frame to the real-time policy; outcomes come from poll()."""

    def poll(self, timeout_s: float = 0.0) -> list[Outcome]:
        """Outcomes (results and drops) ready now, in frame order."""

    def close(self) -> None: ...
