"""Whole-clip backend parity on the trained tiny weights: ONNX Runtime vs torch argmax over a
100-frame generated clip in which objects are added mid-clip (new memory buckets).

At the operating point the weights were trained for (memory every frame, as `s3rt demo` runs)
the tracker's recurrence damps rounding differences, so the two backends (same graphs,
different kernels) agree on every frame. At memory every 5 frames the same weights do not
track (held-out J&F 0.25) and the recurrence amplifies even 1e-7 relative noise in torch alone
(s3rt.benchmarks.parity_diagnosis; RESULTS.md, 'Whole-clip backend parity on the trained tiny
weights'), so there only the first frames are held."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from s3rt.training.trained import has_trained_weights, trained_weights

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(not has_trained_weights("tiny"), reason="trained tiny weights not shipped in this install")

EARLY = 30   # mem_every 5: measured first frame below 99.9 % is 36 (ORT default threads; 37 with 1 thread)


def _run(backend, settings, frames, masks):
    from s3rt.benchmarks.parity_diagnosis import ENTER, clip_inputs
    from s3rt.runtime.tracker import Tracker

    tracker = Tracker(backend, settings, max_short_side=None)
    probs = []
    for t, frame in enumerate(frames):
        mask, ids = clip_inputs(masks, t)
        res = tracker.step(frame, mask=mask, object_ids=ids, end=t == len(frames) - 1)
        probs.append(res.probabilities)
        assert res.object_ids == [i for i in (1, 2, 3, 4) if i <= 2 or ENTER[i] <= t]
    return probs


@pytest.fixture(scope="module")
def clip_and_graphs(tmp_path_factory):
    from s3rt.benchmarks.parity_diagnosis import ENTER, HEIGHT, WIDTH, parity_clip
    from s3rt.export.onnx_export import export_model

    frames, masks = parity_clip()
    assert len(frames) == 100
    assert not (masks[:ENTER[3]] == 3).any() and (masks[ENTER[3]] == 3).sum() > 0
    assert (masks[ENTER[4]] == 4).sum() > 0 and (masks[0] == 1).any() and (masks[0] == 2).any()
    tmp = tmp_path_factory.mktemp("graphs")
    manifest, _ = export_model("tiny", out_dir=tmp, height=HEIGHT, width=WIDTH, weights=trained_weights("tiny"),
                               check_parity=False)
    return frames, masks, manifest, tmp


_RUNS: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}


def both_runs(clip_and_graphs, mem_every: int):
    """torch and ONNX Runtime probabilities for every frame of the clip at this mem_every (cached)."""
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend

    if mem_every not in _RUNS:
        frames, masks, manifest, graphs = clip_and_graphs
        settings = dataclasses.replace(manifest.settings, mem_every=mem_every)
        with TorchBackend("tiny", weights=trained_weights("tiny")) as tb:
            ref = _run(tb, settings, frames, masks)
        with OnnxRuntimeBackend(graphs) as ob:
            got = _run(ob, settings, frames, masks)
        _RUNS[mem_every] = (ref, got)
    return _RUNS[mem_every]


def test_backends_agree_on_every_frame_of_100_at_the_trained_mem_every(clip_and_graphs):
    """Memory every frame (the trained setting): every one of the 100 frames >= 99.9 %, through
    both mid-clip additions (measured: 100.000 % on every frame)."""
    from s3rt.runtime.compare import frame_agreement

    ref, got = both_runs(clip_and_graphs, mem_every=1)
    diffs, agree = frame_agreement(ref, got)
    assert len(agree) == 100
    assert min(agree) >= 0.999, (f"worst frame argmax agreement {100 * min(agree):.3f}% on frame "
                                 f"{int(np.argmin(agree))} (mean {100 * np.mean(agree):.3f}%)")
    for t in (34, 69, 99):                                    # objects still segmented before/after entries
        assert (ref[t].argmax(0) > 0).mean() > 0.02


def test_backends_agree_on_the_first_30_frames_at_mem_every_5(clip_and_graphs):
    """Memory every 5 frames (the export default, untrained for these weights): frames 0..29."""
    from s3rt.runtime.compare import frame_agreement

    ref, got = both_runs(clip_and_graphs, mem_every=5)
    _, agree = frame_agreement(ref[:EARLY], got[:EARLY])
    assert min(agree) >= 0.999, f"worst frame argmax agreement {100 * min(agree):.3f}%"
    assert (ref[EARLY - 1].argmax(0) > 0).mean() > 0.02      # objects still segmented


@pytest.mark.xfail(strict=True, reason="at mem_every 5 the shipped weights (trained with memory every frame) "
                   "do not track and their recurrence amplifies rounding: torch vs torch with 1e-7 relative "
                   "noise diverges as much as torch vs ONNX Runtime (RESULTS.md, 'Whole-clip backend parity')")
def test_backends_agree_on_every_frame_of_100_at_mem_every_5(clip_and_graphs):
    from s3rt.runtime.compare import frame_agreement

    ref, got = both_runs(clip_and_graphs, mem_every=5)
    _, agree = frame_agreement(ref, got)
    assert min(agree) >= 0.999, f"worst frame argmax agreement {100 * min(agree):.3f}% (mean {100 * np.mean(agree):.3f}%)"
