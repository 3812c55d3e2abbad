"""User object ids <-> label values, request masks -> tracker masks, label images -> per-object stats.

The tracker knows objects by positive integer ids; a stream's user names them with strings or
ints. `ObjectTable` is the one place that maps them: each new user id gets the smallest free label
(1, 2, ...), so labels fit mono8 while at most 255 objects are tracked, unless the request names
the labels it wants (an adapter whose labels must match another tool's, e.g. index-mask values).
Every check runs before anything changes, so a refused request leaves the table and the tracker
as they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from s3rt.errors import CapacityError, ObjectIdError, ShapeError
from s3rt.runtime.serving.messages import ObjectId, ObjectStat


MAX_LABEL = 65535                   # label images are uint8, or uint16 past 255


def check_object_id(obj: object) -> ObjectId:
    """A user id is a non-empty string or an int (bool is refused: True == 1 would alias)."""
    if isinstance(obj, bool) or not isinstance(obj, (str, int)):
        raise ObjectIdError(f"object ids are strings or ints, got {type(obj).__name__} {obj!r}")
    if isinstance(obj, str) and not obj:
        raise ObjectIdError("object id is an empty string")
    return obj


class ObjectTable:
    """Tracked user ids and their labels, in the order they were added."""

    def __init__(self, max_objects: int) -> None:
        self.max_objects = max_objects
        self._labels: dict[ObjectId, int] = {}

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, obj: object) -> bool:
        return obj in self._labels

    @property
    def labels(self) -> dict[ObjectId, int]:
        return dict(self._labels)

    def label_of(self, obj: ObjectId) -> int:
        return self._labels[obj]

    def id_of_label(self) -> dict[int, ObjectId]:
        return {v: k for k, v in self._labels.items()}

    # -- checks (no change) ------------------------------------------------------------------------
    def check_new(self, ids: Iterable[ObjectId], labels: Mapping[ObjectId, int] | None = None) -> list[ObjectId]:
        """`labels`: wanted labels for (some of) the new ids; each must be free, 1..MAX_LABEL."""
        ids = [check_object_id(i) for i in ids]
        if labels:
            self.check_labels(ids, labels)
        dup = sorted({str(i) for i in ids if ids.count(i) > 1})
        if dup:
            raise ObjectIdError(f"duplicate object ids in one request: {dup}")
        tracked = [i for i in ids if i in self._labels]
        if tracked:
            raise ObjectIdError(f"object ids {tracked} are already tracked; re-give their mask with an update "
                                "(or remove them first)")
        if len(self._labels) + len(ids) > self.max_objects:
            raise CapacityError(f"tracking {len(self._labels)} objects, adding {len(ids)} would exceed this "
                                f"stream's limit of {self.max_objects}; remove objects first")
        return ids

    def check_labels(self, ids: list[ObjectId], labels: Mapping[ObjectId, int]) -> None:
        stray = [i for i in labels if i not in ids]
        if stray:
            raise ObjectIdError(f"labels requested for ids {stray} that this request does not add")
        wanted = [labels[i] for i in ids if i in labels]
        bad = [v for v in wanted if isinstance(v, bool) or not isinstance(v, (int, np.integer))
               or not 0 < v <= MAX_LABEL]
        if bad:
            raise ObjectIdError(f"requested labels must be integers 1..{MAX_LABEL}, got {bad}")
        if len(set(wanted)) != len(wanted):
            raise ObjectIdError(f"the same label requested twice: {wanted}")
        owner = self.id_of_label()
        taken = {int(v): owner[v] for v in wanted if v in owner}
        if taken:
            raise ObjectIdError(f"requested labels are in use (label -> id): {taken}")

    def check_known(self, ids: Iterable[ObjectId]) -> list[ObjectId]:
        ids = [check_object_id(i) for i in ids]
        dup = sorted({str(i) for i in ids if ids.count(i) > 1})
        if dup:
            raise ObjectIdError(f"duplicate object ids in one request: {dup}")
        unknown = [i for i in ids if i not in self._labels]
        if unknown:
            raise ObjectIdError(f"unknown object ids {unknown}; tracked: {list(self._labels)}")
        return ids

    # -- changes -----------------------------------------------------------------------------------
    def assign(self, ids: list[ObjectId], labels: Mapping[ObjectId, int] | None = None) -> list[int]:
        """Labels for new ids (the requested one, else smallest free first); call after check_new."""
        labels = labels or {}
        used = set(self._labels.values()) | {int(labels[i]) for i in ids if i in labels}
        out = []
        label = 1
        for obj in ids:
            if obj in labels:
                self._labels[obj] = int(labels[obj])
                out.append(int(labels[obj]))
                continue
            while label in used:
                label += 1
            self._labels[obj] = label
            used.add(label)
            out.append(label)
        return out

    def release(self, ids: Iterable[ObjectId]) -> None:
        for obj in ids:
            del self._labels[obj]

    def clear(self) -> None:
        self._labels.clear()


def request_mask(mask: np.ndarray, ids: Mapping[int, ObjectId] | None,
                 frame_hw: tuple[int, int]) -> tuple[np.ndarray, dict[int, ObjectId]]:
    """Check a request's index mask (H0, W0) and its value -> user id map (None: value = id).

    Returns the mask as int64 and the map restricted to the values given. Refuses: wrong shape,
    non-integer mask, values without an id, ids whose value has no pixels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ShapeError(f"mask: expected a 2-D integer index mask (H, W), got {mask.dtype} {mask.shape}")
    if mask.shape != tuple(frame_hw):
        raise ShapeError(f"mask is {mask.shape[0]}x{mask.shape[1]} but its frame is {frame_hw[0]}x{frame_hw[1]}")
    present = [int(v) for v in np.unique(mask) if v != 0]
    if ids is None:
        if not present:
            raise ObjectIdError("mask has no object pixels (all zero): nothing to add")
        ids = {v: v for v in present}
    else:
        ids = {int(v): check_object_id(i) for v, i in ids.items()}
        if not ids:
            raise ObjectIdError("no object ids given with the mask")
        bad = [v for v in ids if v <= 0]
        if bad:
            raise ObjectIdError(f"mask values for objects must be positive, got {bad}")
        unmapped = [v for v in present if v not in ids]
        if unmapped:
            raise ObjectIdError(f"mask values {unmapped} have no object id (ids given for values {sorted(ids)})")
        empty = [ids[v] for v in ids if v not in present]
        if empty:
            raise ObjectIdError(f"empty mask for object ids {empty}: their values have no pixels")
    users = list(ids.values())
    if len(set(users)) != len(users):
        raise ObjectIdError(f"duplicate object ids in one request: {users}")
    return mask.astype(np.int64, copy=False), ids


def relabel(mask: np.ndarray, value_to_label: Mapping[int, int]) -> np.ndarray:
    """Request values -> tracker labels (0 elsewhere), same shape, int64."""
    lut = np.zeros(int(mask.max()) + 1, np.int64)
    for v, label in value_to_label.items():
        lut[v] = label
    return lut[mask]


def label_image(probabilities: np.ndarray, object_labels: list[int]) -> np.ndarray:
    """(N+1, H0, W0) probabilities (background first) -> (H0, W0) label image, uint8 or uint16."""
    dtype = np.uint8 if max(object_labels, default=0) <= 255 else np.uint16
    lut = np.array([0, *object_labels], dtype=dtype)
    return lut[np.argmax(probabilities, axis=0)]


def object_stats(labels: np.ndarray, table: Mapping[ObjectId, int], probabilities: np.ndarray | None = None,
                 channel_labels: list[int] | None = None) -> tuple[ObjectStat, ...]:
    """Area and end-exclusive box of every tracked object in a label image (absent: area 0, box None).

    With `probabilities` (N+1, H0, W0), background first, channel k+1 = `channel_labels[k]`: also
    each visible object's score, its mean probability inside its own mask.
    """
    channel = {label: k + 1 for k, label in enumerate(channel_labels or [])}
    top = max(table.values(), default=0)
    area = np.bincount(labels.ravel(), minlength=top + 1)
    out = []
    for obj, label in table.items():
        if area[label] == 0:
            out.append(ObjectStat(id=obj, label=label, area=0, box=None))
            continue
        hit = labels == label
        rows = np.flatnonzero(hit.any(axis=1))
        cols = np.flatnonzero(hit.any(axis=0))
        score = (float(probabilities[channel[label]][hit].mean())
                 if probabilities is not None and label in channel else None)
        out.append(ObjectStat(id=obj, label=label, area=int(area[label]),
                              box=(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), score=score))
    return tuple(out)
