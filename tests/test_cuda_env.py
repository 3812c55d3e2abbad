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


class _Cudart:
    """Version queries of cuda.bindings.runtime as a CUDA 13 cuda-bindings sees a CUDA 12.6 driver."""

    def __init__(self, driver: int = 12060, runtime: int = 13000) -> None:
        self.driver, self.runtime = driver, runtime

    def cudaDriverGetVersion(self):
        return (0, self.driver)

    def cudaRuntimeGetVersion(self):
        return (0, self.runtime)


class _Err:
    name = "cudaErrorInsufficientDriver"


def test_insufficient_driver_hint_names_the_extra_off_jetson():
    from s3rt.runtime.backends.cuda.env import explain
    text = explain(_Cudart(), _Err(), tegra=False)
    assert text.startswith("CUDA driver 12.6, cuda-bindings ") and "(CUDA runtime 13.0)" in text
    assert 'older than the runtime; install the matching extra (pip install "s3rt[tensorrt-cu12]"' in text


def test_insufficient_driver_hint_on_jetson_never_suggests_pip_tensorrt():
    from s3rt.runtime.backends.cuda.env import explain
    text = explain(_Cudart(), _Err(), tegra=True)
    assert "s3rt[tensorrt" not in text and "tensorrt-cu" not in text
    assert 'pip install "cuda-bindings>=12.6.1,<13"' in text and "JetPack's TensorRT (python3-libnvinfer)" in text
    assert "never pip-install TensorRT on Jetson" in text
    assert "no NVIDIA driver" in explain(_Cudart(driver=0), _Err(), tegra=True)


def test_tegra_detection(tmp_path):
    from s3rt.runtime.backends.cuda.env import is_tegra
    assert not is_tegra(tmp_path)
    (tmp_path / "proc" / "device-tree").mkdir(parents=True)
    (tmp_path / "proc" / "device-tree" / "compatible").write_bytes(b"nvidia,p3737-0000\x00nvidia,tegra234\x00")
    assert is_tegra(tmp_path)
    other = tmp_path / "jetpack"
    (other / "etc").mkdir(parents=True)
    (other / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    assert is_tegra(other)


def test_device_memory_failure_explains_the_pairing():
    """CudaMemory's first call fails as cuda-bindings 13 does on a CUDA 12 driver."""
    import enum

    from s3rt.errors import BackendError
    from s3rt.runtime.backends.cuda.memory import CudaMemory
    from tests.test_cuda_memory import StreamSim

    class OldDriver(StreamSim):
        class cudaError_t(enum.IntEnum):
            cudaSuccess = 0
            cudaErrorInsufficientDriver = 35

        def cudaSetDevice(self, device):
            return (self.cudaError_t.cudaErrorInsufficientDriver,)

        cudaDriverGetVersion = _Cudart.cudaDriverGetVersion
        cudaRuntimeGetVersion = _Cudart.cudaRuntimeGetVersion
        driver, runtime = 12060, 13000

    with pytest.raises(BackendError, match=r"cudaSetDevice\(0\) failed: cudaErrorInsufficientDriver: simulated error "
                                           r"\(CUDA driver 12\.6, cuda-bindings .*\(CUDA runtime 13\.0\): the driver"):
        CudaMemory(OldDriver(), 0)
