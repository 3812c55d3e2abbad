"""The CUDA driver / runtime / cuda-bindings pairing message (runtime/backends/cuda/env.py)."""

from __future__ import annotations

import sys

import pytest


def test_cuda_pairing_message_with_real_bindings(tmp_path):
    """cuda-bindings from the cache (see test_trt_api_conformance) on this driverless machine."""
    from tests.test_trt_api_conformance import cuda_bindings_dirs
    dirs = cuda_bindings_dirs()
    if not dirs:
        pytest.skip("no cached cuda-bindings wheels (run `make trt-bindings`)")
    import subprocess
    for d in dirs:
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from cuda.bindings import runtime as r; "
                "from s3rt.runtime.backends.cuda import env as cuda_env; err, n = r.cudaGetDeviceCount(); "
                "print(err.name); print(cuda_env.explain(r, err))")
        out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        err, text = out.stdout.strip().splitlines()
        major = d.name.split("-")[-1].split(".")[0]
        assert f"cuda-bindings {major}." in text and f"CUDA runtime {major}." in text
        if err != "cudaSuccess":
            assert "no NVIDIA driver is loaded" in text or "older than the runtime" in text
