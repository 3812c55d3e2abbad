"""Engine provenance: which TensorRT build, GPU and CUDA runtime this machine has.

A serialized TensorRT engine runs only with the TensorRT build and on the GPU that made it.
`s3rt build` (s3rt.export.tensorrt.build) records `this_machine()` in engine_manifest.json and
TensorRTBackend compares the manifest with `this_machine()` when it opens
(engines.check_compatible): one function describes the machine on both sides, so the two
descriptions cannot drift apart. It takes the loaded modules (tensorrt, cuda.bindings.runtime)
or loads them through s3rt.optional (MissingDependencyError names the extra); without a usable
GPU it raises BackendError naming the driver / runtime / cuda-bindings pairing.
"""

from __future__ import annotations

from typing import Any

from s3rt.errors import BackendError
from s3rt.optional import cuda_bindings, tensorrt
from s3rt.runtime.backends.cuda.env import explain
from s3rt.runtime.backends.cuda.memory import cuda_check, cuda_error_text
from s3rt.runtime.backends.tensorrt.engines import MachineInfo
from s3rt.runtime.backends.tensorrt.plugins import library_version


def this_machine(device: int = 0, *, trt: Any = None, cudart: Any = None) -> MachineInfo:
    """TensorRT library version, GPU name, compute capability and CUDA runtime of CUDA device `device`.

    Also makes `device` current (cudaSetDevice), as building or running engines on it needs.
    """
    trt = tensorrt.load() if trt is None else trt
    cudart = cuda_bindings.load() if cudart is None else cudart
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        found = cuda_error_text(cudart, err) if err != cudart.cudaError_t.cudaSuccess else "0 devices"
        raise BackendError(f"TensorRT needs an NVIDIA GPU, but CUDA reports none ({found}; {explain(cudart, err)}); "
                           "use --backend onnxruntime or torch on this machine")
    if not 0 <= device < count:
        raise BackendError(f"--device {device}: this machine has {count} CUDA device(s) (0..{count - 1})")
    cuda_check(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
    prop = cuda_check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    runtime = int(cuda_check(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    return MachineInfo(tensorrt_version=library_version(trt), gpu_name=name.rstrip("\x00").strip(),
                       compute_capability=f"{prop.major}.{prop.minor}",
                       cuda_runtime=f"{runtime // 1000}.{(runtime % 1000) // 10}")


__all__ = ["this_machine"]
