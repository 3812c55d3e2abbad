"""SlotStore: which slot each memory frame goes to and which slots each bucket's readout sees."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.errors import InternalError
from s3rt.runtime.slot_store import SlotStore


def _visible(store: SlotStore) -> list[list[int]]:
    return [np.flatnonzero(store.valid[b]).tolist() for b in range(store.bucket_count)]


def test_fifo_keeps_the_permanent_frame_and_the_newest_frames():
    store = SlotStore(max_buckets=2, slots=2 + 2, fifo_len=2)      # 2 permanent slots + a 2-slot ring
    b0 = store.add_bucket()
    store.add_row(b0)
    assert store.claim_slot() == 0                                    # first frame: the permanent slot
    assert [store.claim_slot() for _ in range(4)] == [2, 3, 2, 3]     # then the ring, wrapping around
    assert store.working_slots(0) == [2, 3] and _visible(store) == [[0, 2, 3]]
    b1 = store.add_bucket()                                           # objects on a later frame
    store.add_row(b1)
    assert b1 == 1 and store.permanent_slot(1) == 1 and not store.has_frame(1)
    assert store.claim_slot() == 1                                    # its first frame: its permanent slot,
    assert _visible(store) == [[0, 1, 3], [1]]                        # a working frame of the older bucket
    assert store.claim_slot() == 2                                    # the ring slot that aged out
    assert _visible(store) == [[0, 1, 2], [1, 2]] and store.working_slots(1) == [2]
    assert store.rows_of(1) == [1] and store.object_bucket(4).tolist() == [0, 1, 0, 0]


def test_no_fifo_stores_only_first_frames():
    store = SlotStore(max_buckets=2, slots=2, fifo_len=0)
    store.add_row(store.add_bucket())
    assert store.claim_slot() == 0
    before = store.valid.copy()
    assert store.claim_slot() is None and np.array_equal(store.valid, before)


def test_freed_buckets_are_compacted_and_their_permanent_slot_reused():
    store = SlotStore(max_buckets=2, slots=2 + 2, fifo_len=2)
    for _ in range(2):
        store.add_row(store.add_bucket())
        store.claim_slot()                       # bucket 0 -> slot 0; bucket 1 -> slot 1 (FIFO of bucket 0)
    assert _visible(store) == [[0, 1], [1]]
    assert store.keep_rows([1]) == [1]           # object 0 removed: bucket 0 freed, bucket 1 becomes 0
    assert store.row_buckets == [0] and store.permanent_slot(0) == 1 and _visible(store) == [[1]]
    assert store.keep_rows([0]) is None          # nothing freed
    store.add_row(store.add_bucket())            # takes permanent slot 0 again
    assert store.permanent_slot(1) == 0


def test_retire_oldest_and_reset():
    store = SlotStore(max_buckets=1, slots=1 + 4, fifo_len=4)
    store.add_row(store.add_bucket())
    for _ in range(4):
        store.claim_slot()
    assert store.working_slots(0) == [1, 2, 3]
    assert store.retire_oldest(0, 2) == [1, 2] and _visible(store) == [[0, 3]]
    store.reset()
    assert store.bucket_count == 0 and not store.valid.any() and store.row_buckets == []


def test_two_buckets_without_a_first_frame_is_an_internal_error():
    store = SlotStore(max_buckets=2, slots=4, fifo_len=2)
    store.add_bucket()
    store.add_bucket()
    with pytest.raises(InternalError, match="two buckets waiting for their first frame"):
        store.claim_slot()
