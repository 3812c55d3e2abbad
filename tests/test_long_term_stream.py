"""A long synthetic stream with long-term memory on (tiny model, 32x32 frames, mem_every 1 so
the store consolidates every 2nd frame and prunes every few): state bytes and buffer addresses
constant after warm-up, no backend allocation, RSS flat. 10,000 frames is marked slow (about
5-10 min on 2 shared cores); CI runs 500. Per-frame latency is measured, not asserted here:
`s3rt bench --long-term` reports its slope next to FIFO's."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.benchmarks.bench import FLAT_TOLERANCE_MB, rss_mb
from s3rt.configs import InferenceConfig
from s3rt.long_term_config import LongTermConfig
from s3rt.runtime.backends.pytorch.backend import TorchBackend
from s3rt.runtime.io.synthetic import make_clip
from s3rt.runtime.tracker import Tracker

# HW = 4 tokens per frame at 32x32: top_k 4, 4 prototypes, L = 24, pruning keeps 16
LT = LongTermConfig(max_mem_frames=4, min_mem_frames=2, num_prototypes=4, max_num_tokens=24, buffer_tokens=4)
SETTINGS = InferenceConfig(mem_every=1, top_k=4, max_objects=3, max_buckets=2, long_term=LT)
WARM = 100


def stream(n_frames: int) -> dict:
    import torch
    torch.set_num_threads(1)
    backend = TorchBackend("tiny").open()
    allocations: list[tuple] = []
    original = backend.empty
    backend.empty = lambda shape, dtype: allocations.append(shape) or original(shape, dtype)
    frames, masks = make_clip(60, 32, 32, num_objects=2, seed=1)
    first = np.where(masks[0] == 1, 1, 0).astype(np.int64)
    second = np.where(masks[5] == 2, 2, 0).astype(np.int64)
    tracker = Tracker(backend, SETTINGS, max_short_side=None)
    events = {"consolidate": 0, "prune": 0}
    state, pointers, warm_allocs, rss0 = None, None, None, None
    for t in range(n_frames):
        frame = frames[t % len(frames)] if (t // len(frames)) % 2 == 0 else frames[-1 - t % len(frames)]
        mask = first if t == 0 else second if t == 5 else None      # a second bucket from frame 5
        tracker.step(frame, mask=mask)
        for e in tracker.long_term_events:
            events[e.kind] += 1
        if t == WARM:
            state, warm_allocs, rss0 = tracker.buffer_nbytes(), len(allocations), rss_mb()
            pointers = {k: v.data_ptr() for k, v in tracker.buffers.items()}
        elif t > WARM and t % 100 == 0:
            assert tracker.buffer_nbytes() == state, f"frame {t}: state bytes changed"
            assert all(b["long_term"] <= LT.max_num_tokens for b in tracker.memory_sizes())
    assert len(allocations) == warm_allocs > 0, "the backend allocated after warm-up"
    assert {k: v.data_ptr() for k, v in tracker.buffers.items()} == pointers
    return {"events": events, "rss0": rss0, "rss1": rss_mb(), "state": state, "sizes": tracker.memory_sizes()}


def _check(out: dict, n_frames: int) -> None:
    ev = out["events"]
    assert ev["consolidate"] >= n_frames // 2 and ev["prune"] >= n_frames // 10, ev
    growth = out["rss1"] - out["rss0"]
    assert abs(growth) <= max(FLAT_TOLERANCE_MB, 0.01 * out["rss0"]), \
        f"RSS grew {growth:.1f} MB over {n_frames - WARM} frames (from {out['rss0']:.1f} MB)"
    print(f"{n_frames} frames: {ev}, state {out['state']} B, RSS {out['rss0']:.1f} -> {out['rss1']:.1f} MB")


def test_long_stream_state_constant_ci():
    _check(stream(500), 500)


@pytest.mark.slow
def test_long_stream_10000_frames():
    _check(stream(10_000), 10_000)
