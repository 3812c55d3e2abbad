"""The streaming tracker on the torch backend: objects added mid-clip, bad input, fixed memory."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.configs import InferenceConfig
from s3rt.errors import CapacityError, InputError, ObjectIdError, ShapeError, StateError
from s3rt.runtime.backends.pytorch.backend import TorchBackend
from s3rt.runtime.preprocess import FrameGeometry
from s3rt.runtime.tracker import Tracker


@pytest.fixture(scope="module")
def backend():
    return TorchBackend("tiny").open()


def run_judo(tracker, frames, masks):
    return [tracker.step(f, mask=masks.get(i), end=i == len(frames) - 1) for i, f in enumerate(frames)]


def test_judo_objects_added_mid_clip(backend, judo_clip):
    frames, masks = judo_clip
    results = run_judo(Tracker(backend, max_short_side=None), frames, masks)
    ids_per_frame = [r.object_ids for r in results]
    assert ids_per_frame[0] == [1] and ids_per_frame[5] == [1, 2] and ids_per_frame[8] == [1, 2, 3]
    assert ids_per_frame[13] == [1, 2, 3, 4] and ids_per_frame[15] == [1, 2, 3, 4]
    assert [r.index for r in results if r.memory_written] == [0, 5, 8, 13]
    for r in results:
        assert r.probabilities.shape == (len(r.object_ids) + 1, 120, 214)
        assert np.isfinite(r.probabilities).all()
        assert np.allclose(r.probabilities.sum(0), 1, atol=1e-5)
    for t, m in masks.items():                     # a given mask is reproduced pixel by pixel
        new_id = int(m.max())
        out = results[t].index_mask
        assert np.array_equal(out[m == new_id], np.full((m == new_id).sum(), new_id))


def test_identical_runs_are_identical(backend, judo_clip):
    frames, masks = judo_clip
    a = run_judo(Tracker(backend, max_short_side=None), frames[:7], masks)
    b = run_judo(Tracker(backend, max_short_side=None), frames[:7], masks)
    for x, y in zip(a, b):
        assert np.array_equal(x.probabilities, y.probabilities)


def test_sizes_not_multiple_of_32_are_padded_and_cropped(backend, blob_clip):
    frames, mask = blob_clip
    geo = FrameGeometry.for_frame((60, 100), None)
    assert geo.padded_hw == (64, 128) and geo.pad == (2, 2, 14, 14)
    assert FrameGeometry.for_frame((480, 854), None).pad == (0, 0, 5, 5)
    tracker = Tracker(backend, max_short_side=None)
    first = tracker.step(frames[0], mask=mask)
    assert first.probabilities.shape == (3, 60, 100)
    assert np.array_equal(first.index_mask, mask)
    assert tracker.step(frames[1]).probabilities.shape == (3, 60, 100)


def test_resizing_the_working_size_and_back(backend, blob_clip):
    frames, mask = blob_clip
    big = [np.repeat(np.repeat(f, 2, 0), 2, 1) for f in frames]            # 120 x 200
    big_mask = np.repeat(np.repeat(mask, 2, 0), 2, 1)
    tracker = Tracker(backend, max_short_side=60)
    r = tracker.step(big[0], mask=big_mask)
    assert tracker.geometry.work_hw == (60, 100) and r.probabilities.shape == (3, 120, 200)


def test_bad_inputs_give_clear_errors(backend, blob_clip):
    frames, mask = blob_clip
    tracker = Tracker(backend, max_short_side=None)
    with pytest.raises(StateError, match="before any object"):
        tracker.step(frames[0])
    with pytest.raises(ObjectIdError, match="no object pixels"):
        tracker.step(frames[0], mask=np.zeros_like(mask))
    with pytest.raises(ObjectIdError, match=r"object ids \[7\] have no pixels"):
        tracker.step(frames[0], mask=mask, object_ids=[1, 7])
    with pytest.raises(ObjectIdError, match="positive"):
        tracker.step(frames[0], mask=mask, object_ids=[-1])
    with pytest.raises(ShapeError, match="grayscale"):
        tracker.step(frames[0][..., 0], mask=mask)
    rgba = np.concatenate([frames[0], np.full((*frames[0].shape[:2], 1), 255, np.uint8)], axis=2)
    with pytest.raises(ShapeError, match="RGBA"):
        tracker.step(rgba, mask=mask)
    with pytest.raises(ShapeError, match="differs from the frame size"):
        tracker.step(frames[0], mask=mask[:-1])
    tracker.step(frames[0], mask=mask)
    with pytest.raises(ShapeError, match="same size"):
        tracker.step(frames[1][:-2])
    with pytest.raises(ObjectIdError, match="unknown object ids"):
        tracker.remove_objects([9])


def test_corrupt_and_wrong_mode_frame_files(tmp_path):
    from PIL import Image

    from s3rt.runtime.io.files import read_frame, read_mask
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(InputError, match="unreadable or corrupt"):
        read_frame(bad)
    gray = tmp_path / "gray.png"
    Image.new("L", (20, 20)).save(gray)
    with pytest.raises(ShapeError, match="grayscale"):
        read_frame(gray)
    rgb_mask = tmp_path / "rgb_mask.png"
    Image.new("RGB", (20, 20)).save(rgb_mask)
    with pytest.raises(ShapeError, match="index mask"):
        read_mask(rgb_mask)


def test_capacity_limits(backend, blob_clip):
    frames, mask = blob_clip
    tracker = Tracker(backend, InferenceConfig(max_objects=1), max_short_side=None)
    with pytest.raises(CapacityError, match="max_objects=1"):
        tracker.step(frames[0], mask=mask)
    tracker = Tracker(backend, InferenceConfig(max_buckets=1), max_short_side=None)
    tracker.step(frames[0], mask=np.where(mask == 1, 1, 0))
    with pytest.raises(CapacityError, match="max_buckets=1"):
        tracker.step(frames[1], mask=np.where(mask == 2, 2, 0))


def test_remove_objects_compacts_rows(backend, blob_clip):
    frames, mask = blob_clip
    tracker = Tracker(backend, max_short_side=None)
    tracker.step(frames[0], mask=mask)
    tracker.step(frames[1])
    tracker.remove_objects([1])
    r = tracker.step(frames[2])
    assert r.object_ids == [2] and r.probabilities.shape[0] == 2
    tracker.add_objects(np.where(mask == 1, 5, 0))
    r = tracker.step(frames[3])
    assert r.object_ids == [2, 5]


def test_memory_slots_stay_within_capacity_over_a_long_stream(backend, blob_clip):
    """Validity invariants: each bucket sees its permanent slot + at most max_mem_frames-1 FIFO slots."""
    frames, mask = blob_clip
    settings = InferenceConfig(mem_every=1, max_mem_frames=3, max_buckets=2)
    tracker = Tracker(backend, settings, max_short_side=None)
    tracker.step(frames[0], mask=np.where(mask == 1, 1, 0))
    for t in range(1, 14):
        extra = np.where(mask == 2, 2, 0) if t == 4 else None
        tracker.step(frames[t % len(frames)], mask=extra)
        store = tracker.slot_store
        valid = store.valid
        for b in range(store.bucket_count):
            assert valid[b, store.permanent_slot(b)]
            assert valid[b].sum() <= settings.max_mem_frames
        assert tracker.slots == settings.memory_slots == 4


def test_no_allocation_after_warm_up(blob_clip):
    backend = TorchBackend("tiny").open()
    calls = []
    original = backend.empty
    backend.empty = lambda shape, dtype: calls.append(shape) or original(shape, dtype)
    frames, mask = blob_clip
    tracker = Tracker(backend, InferenceConfig(mem_every=2), max_short_side=None)
    tracker.step(frames[0], mask=mask)
    tracker.step(frames[1])
    warm = len(calls)
    pointers = {k: v.data_ptr() for k, v in tracker.buffers.items()}
    for i in range(2, 12):
        tracker.step(frames[i % len(frames)])
    assert len(calls) == warm > 0
    assert {k: v.data_ptr() for k, v in tracker.buffers.items()} == pointers


def test_bf16_autocast_keeps_fp32_islands_and_tracks_close_to_fp32(blob_clip):
    """The GPU fast path's mixed precision, exercised on the CPU with bf16 autocast."""
    import torch

    from s3rt.errors import BackendError
    from s3rt.export.model import build_model
    frames, mask = blob_clip
    model = build_model("tiny")
    fp32 = Tracker(TorchBackend("tiny", model=model), max_short_side=None)
    bf16 = Tracker(TorchBackend("tiny", model=model, precision="bf16"), max_short_side=None)
    for i, f in enumerate(frames):
        a = fp32.step(f, mask=mask if i == 0 else None)
        b = bf16.step(f, mask=mask if i == 0 else None)
        diff = np.abs(a.probabilities - b.probabilities)
        assert np.isfinite(b.probabilities).all()
        # random weights give near-equal object probabilities (spec 15): judge probabilities, not argmax
        assert diff.max() < 0.1 and diff.mean() < 0.02, (i, diff.max(), diff.mean())
    assert all(v.dtype in (torch.float32, torch.int64, torch.bool) for v in bf16.buffers.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):              # islands compute in fp32
        summaries = model.object_summarizer(torch.rand(1, 2, 64, 128), torch.rand(1, 2, 32, 4, 8))
    assert summaries.dtype == torch.float32
    with pytest.raises(BackendError, match="precision 'int8'"):
        TorchBackend("tiny", precision="int8")
