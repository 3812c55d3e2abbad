"""ONNX Runtime GPU providers bind the tracker's state as CUDA tensors (issue 15, defect 4).

What runs here without a GPU: the binding plan (which device, pointer and shape each buffer is
bound with: pointer arithmetic on DeviceArray views, no CUDA call), the ORT IOBinding calls'
signatures in the installed onnxruntime, the option checks, and the GPU check's buffer-operation
comparison run on numpy buffers (correct and deliberately broken). The CUDA path itself runs only
where a GPU and onnxruntime-gpu exist (benchmarks/gpu_check.py checks the device memory on a GPU).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from s3rt.errors import BackendError, InternalError
from s3rt.runtime.backends.base import Backend
from s3rt.runtime.backends.cuda.memory import DeviceArray
from s3rt.runtime.backends.onnxruntime.backend import BindTarget, OnnxRuntimeBackend, bind_target


def test_device_views_bind_as_cuda_with_offset_pointers():
    bank = DeviceArray(0x10000, (4, 2, 64, 30), "float32")          # mem_value (N_max, B, C, S*P)
    live = bank[:3]                                                   # N = 3 objects: leading-axis view
    t = bind_target(live, "memory_readout", "mem_value", device=1)
    assert t == BindTarget("cuda", 1, np.dtype("float32"), (3, 2, 64, 30), 0x10000)
    row = bank[2]
    assert bind_target(row, "g", "x", 0).ptr == 0x10000 + 2 * 2 * 64 * 30 * 4
    with pytest.raises(InternalError, match="not contiguous"):
        bind_target(bank[:, :, :, 5:10], "g", "mem_value", 0)        # one slot: strided, cannot be bound


def test_host_buffers_bind_as_cpu():
    a = np.zeros((2, 3), np.float32)
    assert bind_target(a, "g", "x", 0) == BindTarget("cpu", 0, a.dtype, (2, 3), a.ctypes.data)
    with pytest.raises(InternalError, match="C-contiguous numpy"):
        bind_target(np.zeros((4, 4), np.float32)[:, 1:3], "g", "x", 0)


def test_options(tmp_path):
    with pytest.raises(BackendError, match="io_binding=False needs host buffers"):
        OnnxRuntimeBackend(tmp_path, provider="cuda", io_binding=False)
    assert OnnxRuntimeBackend(tmp_path, provider="cuda", io_binding=False, host_buffers=True).host_buffers
    assert OnnxRuntimeBackend(tmp_path).host_buffers                 # CPU provider: always host numpy
    assert not OnnxRuntimeBackend(tmp_path, provider="tensorrt").host_buffers


def test_iobinding_calls_match_the_installed_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    params = list(inspect.signature(ort.IOBinding.bind_input).parameters)
    assert params == ["self", "name", "device_type", "device_id", "element_type", "shape", "buffer_ptr"]
    params = list(inspect.signature(ort.IOBinding.bind_output).parameters)
    assert params[:7] == ["self", "name", "device_type", "device_id", "element_type", "shape", "buffer_ptr"]
    assert "iobinding" in inspect.signature(ort.InferenceSession.run_with_iobinding).parameters


class _NumpyOps(Backend):
    """The base class's numpy array operations (what the CPU backends use)."""

    name = "numpy"
    model_config = None

    def run(self, graph, inputs, outputs):  # pragma: no cover - not used
        raise NotImplementedError

    def empty(self, shape, dtype):
        return np.zeros(shape, dtype)


class _BrokenFill(_NumpyOps):
    def fill_(self, dst, value):
        dst[..., :1] = value                  # clears only the first column


def test_gpu_check_memory_comparison_passes_and_fails():
    from s3rt.benchmarks.gpu_check import memory_ops_check
    assert memory_ops_check(_NumpyOps()) == []
    bad = memory_ops_check(_BrokenFill())
    assert bad and "strided fill_" in bad[0] and "value differs" in bad[0]


class _GpuLookingOrt:
    """The installed onnxruntime, reporting the GPU providers as available and recording every
    session build (none may happen before cuda-bindings is known to load)."""

    def __init__(self, ort) -> None:
        self._ort, self.sessions = ort, []

    def __getattr__(self, name):
        return getattr(self._ort, name)

    def get_available_providers(self):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, *args, **kwargs):
        self.sessions.append(args)
        raise AssertionError("a session was built before cuda-bindings was loaded")


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_cuda_bindings_load_before_any_session_is_built(tmp_path, monkeypatch, provider):
    """Issue 24 defect 6: a TensorRT-provider build may take minutes; a missing cuda-bindings must
    stop the open before it, naming the matching extras."""
    import s3rt.runtime.backends.onnxruntime.backend as ort_backend
    from s3rt.errors import MissingDependencyError
    from s3rt.optional import optional
    fake = _GpuLookingOrt(pytest.importorskip("onnxruntime"))
    monkeypatch.setattr(ort_backend, "ort_mod", type("Loader", (), {"load": staticmethod(lambda: fake)}))
    monkeypatch.setattr(ort_backend, "cuda_bindings", optional("s3rt_missing_cuda_bindings", extra="tensorrt-cu12"))
    backend = OnnxRuntimeBackend(tmp_path, provider=provider)
    with pytest.raises(MissingDependencyError, match=r"s3rt_missing_cuda_bindings.*s3rt\[onnxruntime-gpu-cu12\].*"
                                                     r"s3rt\[onnxruntime-gpu-cu13\].*--ort-host-buffers"):
        backend.open()
    assert fake.sessions == [] and backend._mem is None


def test_device_memory_is_freed_when_a_session_build_fails(tmp_path, monkeypatch):
    import s3rt.runtime.backends.onnxruntime.backend as ort_backend
    from s3rt.errors import ModelFormatError
    from tests.test_cuda_memory import StreamSim
    sim = StreamSim()
    fake = _GpuLookingOrt(pytest.importorskip("onnxruntime"))
    monkeypatch.setattr(ort_backend, "ort_mod", type("Loader", (), {"load": staticmethod(lambda: fake)}))
    monkeypatch.setattr(ort_backend, "cuda_bindings", type("Loader", (), {"load": staticmethod(lambda: sim)}))
    backend = OnnxRuntimeBackend(tmp_path, provider="cuda")           # tmp_path: no export there
    with pytest.raises(ModelFormatError, match="manifest.json"):
        backend.open()
    assert backend._mem is None and fake.sessions == []
    assert sim.log[-1] == "stream destroyed" and sim._buffers == {}       # CudaMemory made first, then closed
