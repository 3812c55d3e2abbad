"""Which memory slot holds which frame for which object group: the tracker's slot bookkeeping.

The memory bank has S = NB + R slots of P tokens: slot b < NB is a permanent slot (a bucket's
first frame), slots NB.. form a FIFO ring of R working slots shared by all buckets. A bucket
(objects first given on the same frame) sees its permanent slot plus its own ordered list of
working slots (oldest first); `valid` (NB, S) says which slots each bucket's readout may use and
is what the tracker uploads into the `bucket_valid` graph input. Object rows map to buckets
(`row_buckets`, uploaded as `object_bucket`).

Everything here is host-side (numpy and lists) and allocated once; the tracker owns the store,
decides when to upload `valid`, and hands the store to long-term memory, which retires a
bucket's oldest working slots when it consolidates them (DESIGN "State", LONG_TERM_MEMORY §6).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from s3rt.errors import InternalError


@dataclass
class Bucket:
    """Objects that first appeared on the same frame share a permanent memory frame."""

    perm_slot: int
    fifo: deque = field(default_factory=deque)   # working slots valid for this bucket, oldest first
    has_frame: bool = False                      # permanent slot written yet?


class SlotStore:
    """Buckets, the FIFO ring cursor, per-bucket slot validity and row -> bucket.

    max_buckets: NB; slots: S (NB permanent + ring); fifo_len: working slots a bucket keeps
    (FIFO memory: max_mem_frames - 1, evicting the oldest; long-term memory: F_max, never
    evicting: consolidation retires them instead; 0: permanent slots only).
    """

    def __init__(self, max_buckets: int, slots: int, fifo_len: int) -> None:
        self.max_buckets = max_buckets
        self.slots = slots
        self.fifo_len = fifo_len
        self.valid = np.zeros((max_buckets, slots), bool)      # (NB, S) host copy of bucket_valid
        self.reset()

    def reset(self) -> None:
        """No buckets, no rows, every slot invalid; the ring restarts at its first slot."""
        self._buckets: list[Bucket] = []
        self._row_bucket: list[int] = []
        self._ring_next = 0
        self.valid[:] = False

    # -- queries ----------------------------------------------------------------------------------
    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    @property
    def row_buckets(self) -> list[int]:
        """Bucket of each object row (row order)."""
        return list(self._row_bucket)

    def rows_of(self, bucket: int) -> list[int]:
        return [r for r, b in enumerate(self._row_bucket) if b == bucket]

    def permanent_slot(self, bucket: int) -> int:
        return self._buckets[bucket].perm_slot

    def has_frame(self, bucket: int) -> bool:
        """Has the bucket's permanent slot been written?"""
        return self._buckets[bucket].has_frame

    def working_slots(self, bucket: int) -> list[int]:
        """The bucket's working slots, oldest first."""
        return list(self._buckets[bucket].fifo)

    def working_count(self, bucket: int) -> int:
        return len(self._buckets[bucket].fifo)

    def object_bucket(self, max_objects: int) -> np.ndarray:
        """(max_objects,) int64 row -> bucket, zero past the last row (the object_bucket input)."""
        host = np.zeros(max_objects, np.int64)
        host[:len(self._row_bucket)] = self._row_bucket
        return host

    # -- objects ----------------------------------------------------------------------------------
    def add_bucket(self) -> int:
        """A new bucket on the lowest free permanent slot; -> its index. The caller checks capacity."""
        used = {b.perm_slot for b in self._buckets}
        perm = next(s for s in range(self.max_buckets) if s not in used)
        # a permanent slot is never part of a FIFO, but a freed one may still be listed as FIFO of others
        for bi, bucket in enumerate(self._buckets):
            if perm in bucket.fifo:
                bucket.fifo.remove(perm)
                self.valid[bi, perm] = False
        self._buckets.append(Bucket(perm_slot=perm))
        return len(self._buckets) - 1

    def add_row(self, bucket: int) -> None:
        """A new object row (the next row index) in `bucket`."""
        self._row_bucket.append(bucket)

    def keep_rows(self, keep: list[int]) -> list[int] | None:
        """Keep only rows `keep` (old indices, ascending), renumbered 0..; buckets left without a row
        are freed and the rest renumbered. -> the kept buckets' old indices (ascending) when
        buckets were freed, else None."""
        self._row_bucket = [self._row_bucket[r] for r in keep]
        used = sorted(set(self._row_bucket))
        if len(used) == len(self._buckets):
            return None
        remap = {old: new for new, old in enumerate(used)}
        self._buckets = [self._buckets[b] for b in used]
        self._row_bucket = [remap[b] for b in self._row_bucket]
        self.valid[:len(used)] = self.valid[used]
        self.valid[len(used):] = False
        return used

    # -- memory frames ----------------------------------------------------------------------------
    def claim_slot(self) -> int | None:
        """Pick the slot for a new memory frame and update every bucket's validity (DESIGN).

        A bucket's memory = its permanent first frame + its newest `fifo_len` memory frames. The
        frame that creates a bucket goes to that bucket's permanent slot (and is a FIFO entry of
        the older buckets); any other frame goes to the next ring slot, which by then has aged
        out of every bucket's FIFO. None: the frame is not stored (no FIFO and no new bucket);
        `valid` is then unchanged.
        """
        fifo_len = self.fifo_len
        new = [b for b in self._buckets if not b.has_frame]
        if len(new) > 1:
            raise InternalError("two buckets waiting for their first frame")
        if not new and fifo_len == 0:
            return None
        if fifo_len > 0:
            for bi, bucket in enumerate(self._buckets):   # make room: this frame evicts the oldest
                while bucket.has_frame and len(bucket.fifo) >= fifo_len:
                    self.valid[bi, bucket.fifo.popleft()] = False
        if new:
            slot = new[0].perm_slot
        else:
            slot = self.max_buckets + self._ring_next
            self._ring_next = (self._ring_next + 1) % fifo_len
            if self.valid[:, slot].any():
                raise InternalError(f"ring slot {slot} reused while still valid")
        for bi, bucket in enumerate(self._buckets):
            if not bucket.has_frame:
                bucket.has_frame = True
                self.valid[bi, slot] = True
            elif fifo_len > 0:
                self.valid[bi, slot] = True
                bucket.fifo.append(slot)
        return slot

    def retire_oldest(self, bucket: int, count: int) -> list[int]:
        """The bucket's `count` oldest working slots leave its memory (consolidated); -> them."""
        fifo = self._buckets[bucket].fifo
        gone = [fifo.popleft() for _ in range(count)]
        self.valid[bucket, gone] = False
        return gone
