"""Long-term memory with a Cutie config (Cutie turns it on for long videos; same algorithm,
LONG_TERM_MEMORY.md): the tiny-cutie tracker, in torch and in ONNX Runtime, against the literal
growing re-statement on test_long_term's scenario (14 consolidations, 4 prunings, removals)."""

from __future__ import annotations

import pytest
import torch

from s3rt.export.model import build_model
from s3rt.runtime.backends.pytorch.backend import TorchBackend
from s3rt.runtime.tracker import Tracker
from test_long_term import LT, SETTINGS, compare, lt_clip, run_reference, run_tracker


@pytest.fixture(scope="module")
def cutie_scenario():
    torch.manual_seed(0)
    model = build_model("tiny-cutie", seed=3)
    frames, masks = lt_clip()
    return (model, frames, masks, *run_reference(model, frames, masks))


def test_cutie_torch_tracker_matches_the_literal_long_term_reference(cutie_scenario):
    model, frames, masks, ref, want = cutie_scenario
    tracker = Tracker(TorchBackend("tiny-cutie", model=model), SETTINGS, max_short_side=None)
    got, trace = run_tracker(tracker, frames, masks)
    compare(got, trace, ref, want)


def test_cutie_long_term_export_in_onnxruntime_matches_the_reference(cutie_scenario, tmp_path):
    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    model, frames, masks, ref, want = cutie_scenario
    _, rows = export_model("tiny-cutie", out_dir=tmp_path, height=128, width=128, model=model,
                           max_objects=SETTINGS.max_objects, max_buckets=SETTINGS.max_buckets, top_k=SETTINGS.top_k,
                           mem_every=SETTINGS.mem_every, long_term=LT)
    assert max(r.max_abs for r in rows) < 1e-4
    with OnnxRuntimeBackend(tmp_path) as backend:
        tracker = Tracker(backend, None, max_short_side=None)
        assert tracker.settings.long_term == LT and tracker.settings.mem_every == 1
        got, trace = run_tracker(tracker, frames, masks)
    compare(got, trace, ref, want)
