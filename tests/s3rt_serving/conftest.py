"""Serving fixtures: one tiny ONNX export per session, small frames, a moving-blob clip."""

from __future__ import annotations

import pytest

from s3rt_serving.serving_helpers import H, W


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny-config export (random weights, seed 3) at 64x96, 4 objects, 3 object groups."""
    from s3rt.export.onnx_export import export_model
    out = tmp_path_factory.mktemp("tiny_serving")
    export_model("tiny", out_dir=out, height=H, width=W, max_objects=4, max_buckets=3, seed=3, check_parity=False)
    return out


@pytest.fixture(scope="session")
def backend(tiny_model):
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    b = OnnxRuntimeBackend(tiny_model, threads=1)
    b.open()
    yield b
    b.close()
