"""Serving fixtures: an ONNX Runtime backend on the session's tiny export (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def backend(tiny_model):
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    b = OnnxRuntimeBackend(tiny_model, threads=1)
    b.open()
    yield b
    b.close()
