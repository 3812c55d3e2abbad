"""The prepared GPU check: its CPU-runnable parts run here; the GPU parts only where a GPU is lent."""

from __future__ import annotations

import subprocess

import numpy as np

from s3rt.benchmarks import gpu_check
from s3rt.runtime.io.synthetic import first_frame_clip
from tests.conftest import REPO


def test_gpu_check_refuses_without_cuda_device():
    import torch
    if torch.cuda.is_available():
        import pytest
        pytest.skip("a CUDA device is present: run benchmarks/gpu_check.sh itself")
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
    assert gpu_check.main(["--configs", "tiny"]) == 2


def test_gpu_check_tracker_run_on_cpu():
    frames, mask = first_frame_clip(3, 64, 96, num_objects=2)
    probs, fps = gpu_check.tracker_run("tiny", "cpu", "fp32", frames, mask)
    again, _ = gpu_check.tracker_run("tiny", "cpu", "fp32", frames, mask)
    assert len(probs) == 3 and fps > 0
    for a, b in zip(probs, again):                 # the CPU reference is deterministic
        np.testing.assert_array_equal(a, b)
