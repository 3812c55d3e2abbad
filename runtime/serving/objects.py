"""User object ids <-> label values, request masks -> tracker masks, label images -> per-object stats.

The tracker knows objects by positive integer ids; a stream's user names them with strings or
ints. `ObjectTable` is the one place that maps them: each new user id gets the smallest free label
(1, 2, ...), so labels fit mono8 while at most 255 objects are tracked, unless the request names
the labels it wants (an adapter whose labels must match another tool's, e.g. index-mask values).
Every check runs before anything changes, so a refused request leaves the table and the tracker
as they were.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from s3rt.errors import CapacityError, ObjectIdError, ShapeError
from s3rt.runtime.serving.messages import ObjectId, ObjectStat


MAX_LABEL = 65535                   # label images are uint8, or uint16 past 255
ECHO = 5                            # an error message names at most this many ids or values


def few(items: Iterable[object] | Mapping[object, object], limit: int = ECHO) -> str:
    """At most `limit` items (or mapping entries) for an error message, with the count of the rest:
    a request may hold 10^6 ids, and its error must stay one short line."""
    if isinstance(items, Mapping):
        entries = [f"{k!r}: {v!r}" for k, v in items.items()]
        opening, closing = "{", "}"
    else:
        entries = [repr(i) for i in items]
        opening, closing = "[", "]"
    more = f", ... ({len(entries)} in all)" if len(entries) > limit else ""
    return f"{opening}{', '.join(entries[:limit])}{more}{closing}"


def _duplicates(ids: list[ObjectId]) -> list[ObjectId]:
    return [i for i, n in Counter(ids).items() if n > 1]


def check_object_id(obj: object) -> ObjectId:
    """A user id is a non-empty string (at most 256 characters) or an int (bool is refused: True == 1
    would alias)."""
    if isinstance(obj, bool) or not isinstance(obj, (str, int)):
        raise ObjectIdError(f"object ids are strings or ints, got {type(obj).__name__}")
    if isinstance(obj, str) and not 0 < len(obj) <= 256:
        raise ObjectIdError(f"object id strings must have 1..256 characters, got {len(obj)}")
    return obj


class ObjectTable:
    """Tracked user ids and their labels, in the order they were added, plus reservations.

    A reservation pins a label for an id whose add has not reached the tracker yet (an adapter that
    tells its caller the label before the mask's frame arrives: the ROS node, bag replay). A
    reserved id counts toward the limit and its label is taken; the add that tracks it must ask for
    that label, and a refused add drops the reservations of its ids. Thread-safe: an adapter
    reserves on its thread while the stream's worker adds.
    """

    def __init__(self, max_objects: int) -> None:
        self.max_objects = max_objects
        self._labels: dict[ObjectId, int] = {}
        self._reserved: dict[ObjectId, int] = {}
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, obj: object) -> bool:
        return obj in self._labels

    @property
    def labels(self) -> dict[ObjectId, int]:
        """id -> label of the tracked objects."""
        with self._lock:
            return dict(self._labels)

    @property
    def claimed(self) -> dict[ObjectId, int]:
        """id -> label of the tracked and the reserved objects."""
        with self._lock:
            return {**self._labels, **self._reserved}

    def label_of(self, obj: ObjectId) -> int:
        return self._labels[obj]

    def id_of_label(self) -> dict[int, ObjectId]:
        return {v: k for k, v in self.claimed.items()}

    # -- checks (no change) ------------------------------------------------------------------------
    def check_new(self, ids: Iterable[ObjectId], labels: Mapping[ObjectId, int] | None = None) -> list[ObjectId]:
        """`labels`: wanted labels for (some of) the new ids; each must be free, 1..MAX_LABEL (or
        the id's own reservation)."""
        ids = [check_object_id(i) for i in ids]
        with self._lock:
            mine = {i: self._reserved[i] for i in ids if i in self._reserved}
            wrong = {i: v for i, v in mine.items() if labels and i in labels and labels[i] != v}
            if wrong:
                raise ObjectIdError(f"ids {few(wrong)} were reserved with other labels {few(mine)}")
            if labels:
                self.check_labels(ids, {i: v for i, v in labels.items() if i not in mine})
            others = len(self._labels) + len(self._reserved) - len(mine)
            if others + len(ids) > self.max_objects:
                waiting = f" ({len(self._reserved) - len(mine)} more waiting for their frame)" if others > len(
                    self._labels) else ""
                raise CapacityError(f"tracking {len(self._labels)} objects{waiting}, adding {len(ids)} would exceed "
                                    f"this stream's limit of {self.max_objects}; remove objects first")
            dup = _duplicates(ids)
            if dup:
                raise ObjectIdError(f"duplicate object ids in one request: {few(dup)}")
            tracked = [i for i in ids if i in self._labels]
            if tracked:
                raise ObjectIdError(f"object ids {few(tracked)} are already tracked; re-give their mask with an "
                                    "update (or remove them first)")
            return ids

    def check_labels(self, ids: list[ObjectId], labels: Mapping[ObjectId, int]) -> None:
        given = set(ids)
        stray = [i for i in labels if i not in given]
        if stray:
            raise ObjectIdError(f"labels requested for ids {few(stray)} that this request does not add")
        wanted = [labels[i] for i in ids if i in labels]
        bad = [v for v in wanted if isinstance(v, bool) or not isinstance(v, (int, np.integer))
               or not 0 < v <= MAX_LABEL]
        if bad:
            raise ObjectIdError(f"requested labels must be integers 1..{MAX_LABEL}, got {few(bad)}")
        if len(set(wanted)) != len(wanted):
            raise ObjectIdError(f"the same label requested twice: {few(_duplicates(wanted))}")
        owner = self.id_of_label()
        taken = {int(v): owner[v] for v in wanted if v in owner}
        if taken:
            raise ObjectIdError(f"requested labels are in use (label -> id): {few(taken)}")

    def check_known(self, ids: Iterable[ObjectId]) -> list[ObjectId]:
        ids = [check_object_id(i) for i in ids]
        dup = _duplicates(ids)
        if dup:
            raise ObjectIdError(f"duplicate object ids in one request: {few(dup)}")
        with self._lock:
            unknown = [i for i in ids if i not in self._labels]
            if unknown:
                raise ObjectIdError(f"unknown object ids {few(unknown)}; tracked: {few(list(self._labels))}")
        return ids

    # -- changes -----------------------------------------------------------------------------------
    def assign(self, ids: list[ObjectId], labels: Mapping[ObjectId, int] | None = None) -> list[int]:
        """Labels for new ids (reserved, requested, else smallest free first); call after check_new."""
        with self._lock:
            chosen = self._choose(ids, labels)
            for obj, label in zip(ids, chosen):
                self._reserved.pop(obj, None)
                self._labels[obj] = label
            return chosen

    def reserve(self, ids: Iterable[ObjectId], labels: Mapping[ObjectId, int] | None = None) -> dict[ObjectId, int]:
        """Pin labels for ids to be added later (checked like an add); returns id -> label."""
        with self._lock:
            ids = self.check_new(ids, labels)
            held = [i for i in ids if i in self._reserved]
            if held:
                raise ObjectIdError(f"object ids {few(held)} are already given and wait for their frame")
            chosen = dict(zip(ids, self._choose(ids, labels)))
            self._reserved.update(chosen)
            return chosen

    def unreserve(self, ids: Iterable[ObjectId]) -> None:
        with self._lock:
            for obj in ids:
                self._reserved.pop(obj, None)

    def release(self, ids: Iterable[ObjectId]) -> None:
        with self._lock:
            for obj in ids:
                del self._labels[obj]

    def clear(self) -> None:
        with self._lock:
            self._labels.clear()
            self._reserved.clear()

    def _choose(self, ids: list[ObjectId], labels: Mapping[ObjectId, int] | None) -> list[int]:
        labels = labels or {}
        others = {k: v for k, v in self.claimed.items() if k not in ids}
        used = set(others.values()) | {int(labels[i]) for i in ids if i in labels} \
            | {self._reserved[i] for i in ids if i in self._reserved}
        out = []
        label = 1
        for obj in ids:
            if obj in self._reserved:
                out.append(self._reserved[obj])
            elif obj in labels:
                out.append(int(labels[obj]))
            else:
                while label in used:
                    label += 1
                used.add(label)
                out.append(label)
        return out


def request_mask(mask: np.ndarray, ids: Mapping[int, ObjectId] | None, frame_hw: tuple[int, int], *,
                 max_objects: int | None = None) -> tuple[np.ndarray, dict[int, ObjectId]]:
    """Check a request's index mask (H0, W0) and its value -> user id map (None: value = id).

    Returns the mask and the map restricted to the values given. Refuses: wrong shape, non-integer
    or negative mask, more distinct values (or ids) than `max_objects` (counted vectorised first,
    so a mask with 65,535 values costs milliseconds), values without an id, ids whose value has no
    pixels.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ShapeError(f"mask: expected a 2-D integer index mask (H, W), got {mask.dtype} {mask.shape}")
    if mask.shape != tuple(frame_hw):
        raise ShapeError(f"mask is {mask.shape[0]}x{mask.shape[1]} but its frame is {frame_hw[0]}x{frame_hw[1]}")
    if mask.size and (mask.min() < 0 or mask.max() > MAX_LABEL):
        raise ObjectIdError(f"mask values must be 0..{MAX_LABEL} (0 = no object), got {mask.min()}..{mask.max()}")
    values = np.unique(mask)
    values = values[values != 0]
    if max_objects is not None and max(len(values), len(ids or ())) > max_objects:
        raise CapacityError(f"the mask holds {len(values)} object values ({len(ids or ())} ids given) but this "
                            f"stream tracks at most {max_objects} objects")
    present = [int(v) for v in values]
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
            raise ObjectIdError(f"mask values for objects must be positive, got {few(bad)}")
        unmapped = [v for v in present if v not in ids]
        if unmapped:
            raise ObjectIdError(f"mask values {few(unmapped)} have no object id (ids given for values "
                                f"{few(sorted(ids))})")
        have = set(present)
        empty = [ids[v] for v in ids if v not in have]
        if empty:
            raise ObjectIdError(f"empty mask for object ids {few(empty)}: their values have no pixels")
    dup = _duplicates(list(ids.values()))
    if dup:
        raise ObjectIdError(f"duplicate object ids in one request: {few(dup)}")
    return mask, ids


def relabel(mask: np.ndarray, value_to_label: Mapping[int, int]) -> np.ndarray:
    """Request values (0..65535) -> tracker labels (0 elsewhere), same shape, int64."""
    lut = np.zeros(int(mask.max(initial=0)) + 1, np.int64)
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
