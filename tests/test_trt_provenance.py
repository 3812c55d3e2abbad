"""Engine provenance (runtime/backends/tensorrt/provenance.py): the one description of this machine that
`s3rt build` records and TensorRTBackend checks. Run here with a cudart stand-in answering the five
queries as a driverless machine, a wrong device index and an Orin would; the real calls' names and
arity are checked against the cuda-bindings wheels in test_trt_api_conformance."""

from __future__ import annotations

import enum
import inspect
from types import SimpleNamespace

import pytest

from s3rt.errors import BackendError
from s3rt.runtime.backends.tensorrt.engines import MachineInfo
from s3rt.runtime.backends.tensorrt.provenance import this_machine


class _Cudart:
    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorNoDevice = 100

    def __init__(self, count: int = 1, err=None) -> None:
        self.count, self.err = count, err if err is not None else self.cudaError_t.cudaSuccess
        self.current = None

    def cudaGetDeviceCount(self):
        return (self.err, self.count)

    def cudaSetDevice(self, device):
        self.current = device
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(self, device):
        return (self.cudaError_t.cudaSuccess, SimpleNamespace(name=b"Orin\x00\x00", major=8, minor=7))

    def cudaRuntimeGetVersion(self):
        return (self.cudaError_t.cudaSuccess, 12060)

    def cudaDriverGetVersion(self):
        return (self.cudaError_t.cudaSuccess, 0 if self.err else 12060)

    def cudaGetErrorString(self, err):
        return (self.cudaError_t.cudaSuccess, b"no CUDA-capable device is detected")


TRT = SimpleNamespace(__version__="10.3.0.30")       # libnvinfer absent here: the bindings' version is used


def test_this_machine_describes_the_gpu_and_makes_it_current():
    cudart = _Cudart(count=2)
    info = this_machine(1, trt=TRT, cudart=cudart)
    assert info == MachineInfo("10.3.0.30", "Orin", "8.7", "12.6") and cudart.current == 1
    assert info.describe() == "TensorRT 10.3.0.30 on Orin (sm 8.7)"


def test_this_machine_without_a_gpu_names_the_pairing():
    cudart = _Cudart(count=0, err=_Cudart.cudaError_t.cudaErrorNoDevice)
    with pytest.raises(BackendError, match=r"TensorRT needs an NVIDIA GPU, but CUDA reports none \(cudaErrorNoDevice: "
                                           r"no CUDA-capable device is detected; CUDA driver none, .*no NVIDIA driver"):
        this_machine(0, trt=TRT, cudart=cudart)
    with pytest.raises(BackendError, match=r"--device 3: this machine has 2 CUDA device\(s\) \(0\.\.1\)"):
        this_machine(3, trt=TRT, cudart=_Cudart(count=2))


def test_build_and_backend_share_it():
    """Both sides call the same public function (no backend internals in the export)."""
    import s3rt.export.tensorrt.build as build
    import s3rt.runtime.backends.tensorrt.backend as backend
    assert build.this_machine is this_machine and backend.this_machine is this_machine
    assert "this_machine(" in inspect.getsource(backend.TensorRTBackend._open)
    assert "this_machine(" in inspect.getsource(build) and "backends.tensorrt.backend" not in inspect.getsource(build)
