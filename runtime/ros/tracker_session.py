"""A synchronous Session over one runtime Tracker (user ids -> labels, no real-time policy).

Interim seam until the serving core is merged: ``process`` runs the tracker on the frame; the
real-time calls (``submit``/``poll``) are refused with a clear message; wrap it in
``s3rt.runtime.ros.realtime.RealtimeSession`` for the live policy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from s3rt.errors import ObjectIdError, ShapeError, StateError
from s3rt.runtime.ros.session import Outcome
from s3rt.runtime.tracker import Tracker


class TrackerSession:
    def __init__(self, tracker: Tracker, *, owns_backend: bool = False) -> None:
        self.tracker = tracker
        self.owns_backend = owns_backend          # close() closes the backend too (the node's case)
        self._labels: dict[str, int] = {}         # user id -> label (= the tracker's object id)
        self._pending: np.ndarray | None = None   # index mask for the next frame

    def _next_labels(self, n: int) -> list[int]:
        used = set(self._labels.values())
        free = [v for v in range(1, 65536) if v not in used][:n]
        if len(free) < n:
            raise ObjectIdError("no free labels left (65535 in use)")
        return free

    def add_objects(self, masks: Mapping[str, np.ndarray]) -> dict[str, int]:
        if not masks:
            raise ObjectIdError("add_objects: no objects given")
        shapes = {np.asarray(m).shape for m in masks.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ShapeError(f"add_objects: masks must be (H, W) and all the same size, got {sorted(shapes)}")
        empty = [k for k, m in masks.items() if not np.asarray(m).any()]
        if empty:
            raise ObjectIdError(f"add_objects: masks of {empty} are empty")
        new = [k for k in masks if k not in self._labels]
        labels = dict(self._labels)
        labels.update(zip(new, self._next_labels(len(new))))
        index = np.zeros(next(iter(shapes)), np.int64) if self._pending is None else self._pending.copy()
        for k, m in masks.items():
            index[np.asarray(m).astype(bool)] = labels[k]
        self.tracker.add_objects(index)          # validates now, applies with the next frame
        self._labels, self._pending = labels, index
        return {k: labels[k] for k in masks}

    def add_index_mask(self, mask: np.ndarray) -> dict[str, int]:
        values = [int(v) for v in np.unique(mask) if v != 0]
        if not values:
            raise ObjectIdError("the mask has no object pixels (all zero): nothing to track")
        taken = {k: v for k, v in self._labels.items() if v in values and k != str(v)}
        if taken:
            raise ObjectIdError(f"labels {sorted(taken.values())} already belong to ids {sorted(taken)}")
        self.tracker.add_objects(np.asarray(mask, np.int64))
        self._labels.update({str(v): v for v in values})
        self._pending = np.asarray(mask, np.int64)
        return {str(v): v for v in values}

    def remove_object(self, object_id: str) -> None:
        if object_id not in self._labels:
            raise ObjectIdError(f"unknown object id '{object_id}'; tracked: {sorted(self._labels)}")
        self.tracker.remove_objects([self._labels[object_id]])
        del self._labels[object_id]

    def reset(self) -> None:
        self.tracker.reset()
        self._labels, self._pending = {}, None

    def process(self, frame: np.ndarray, seq: int, capture_ns: int) -> Outcome:
        t0 = time.perf_counter()
        try:
            result = self.tracker.step(frame)
        except (ShapeError, StateError, ObjectIdError) as exc:
            return Outcome(seq, capture_ns, error=str(exc))
        finally:
            self._pending = None
        ms = (time.perf_counter() - t0) * 1000
        by_label = {v: k for k, v in self._labels.items()}
        labels = result.index_mask                                  # (H, W) argmax mapped to labels
        scores = {}
        for row, label in enumerate(result.object_ids):             # probabilities: (N+1, H, W), bg first
            inside = labels == label
            if inside.any():
                scores[label] = float(result.probabilities[row + 1][inside].mean())
        return Outcome(seq, capture_ns, labels=labels, ids={i: by_label[i] for i in result.object_ids},
                       scores=scores, inference_ms=ms, e2e_ms=ms)

    def submit(self, frame: np.ndarray, seq: int, capture_ns: int) -> None:
        raise StateError("real-time replay needs the serving session core (not merged in this build)")

    def poll(self, timeout_s: float = 0.0) -> list[Outcome]:
        return []

    def close(self) -> None:
        if self.owns_backend:
            self.tracker.backend.close()
