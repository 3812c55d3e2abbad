"""Every TensorRT / cuda-bindings attribute s3rt uses exists in the real bindings of TensorRT 10.16 and 11.4.

The bindings wheels install from the index; their shared libraries (libnvinfer, libnvonnxparser)
do not, so `import tensorrt` fails here. Where the import works (a machine with TensorRT), names
are checked with hasattr. Where it fails, the test reads the names from the compiled module's
string table (pybind11 keeps every bound name as a NUL-terminated string; the linker may merge a
name into the tail of a longer one, e.g. "set_output_type" inside "reset_output_type"), which
proves presence or absence of names but not call arity. cuda-bindings import without a driver,
so their calls are checked with inspect.signature (arity included).

Wheels are read from $S3RT_TRT_BINDINGS_CACHE (default ~/.cache/s3rt-trt-bindings), filled by
`make trt-bindings`; the tests skip with that hint when it is empty. Nothing is mocked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("S3RT_TRT_BINDINGS_CACHE", Path.home() / ".cache" / "s3rt-trt-bindings"))

# names s3rt's TensorRT code uses (export/tensorrt/build.py, runtime/backends/tensorrt/{backend,plugins,provenance}.py;
# the cuda-bindings calls below also cover runtime/backends/cuda/memory.py)
TRT_NAMES = """__version__ float32 float16 BuilderFlag TF32 Logger WARNING VERBOSE LayerType TensorIOMode INPUT OUTPUT
nptype init_libnvinfer_plugins get_plugin_registry load_library Runtime OnnxParser NetworkDefinitionCreationFlag
STRONGLY_TYPED MemoryPoolType WORKSPACE ExecutionContextAllocationStrategy USER_MANAGED Builder
deserialize_cuda_engine set_shape parse parse_from_file get_error num_errors get_layer num_layers get_input num_inputs
get_output num_outputs dtype get_tensor_profile_shape get_tensor_name get_tensor_dtype get_tensor_mode
num_io_tensors set_tensor_address set_input_shape get_tensor_shape execute_async_v3 set_device_memory
device_memory_size_v2 set_memory_pool_limit set_flag clear_flag add_optimization_profile serialize combine
create_timing_cache set_timing_cache create_builder_config create_optimization_profile create_network
build_serialized_network create_execution_context""".split()
# used only by fp16 mode "constraints", which builder_flags() refuses where they are missing
TRT_10_ONLY = ["FP16", "OBEY_PRECISION_CONSTRAINTS", "set_output_type", "precision"]

# cuda.bindings.runtime calls -> positional arity
CUDART_CALLS = {"cudaDriverGetVersion": 0, "cudaRuntimeGetVersion": 0, "cudaGetDeviceCount": 0, "cudaSetDevice": 1,
                "cudaGetDeviceProperties": 1, "cudaGetErrorString": 1, "cudaMalloc": 1, "cudaFree": 1,
                "cudaMemcpyAsync": 5, "cudaMemcpy2DAsync": 8, "cudaMemsetAsync": 4, "cudaMemset2DAsync": 6,
                "cudaStreamCreateWithFlags": 1, "cudaStreamSynchronize": 1, "cudaStreamDestroy": 1}
CUDART_TYPES = ["cudaError_t", "cudaMemcpyKind", "cudaStreamNonBlocking"]


def trt_dirs() -> list[Path]:
    return sorted(CACHE.glob("trt-*")) if CACHE.is_dir() else []


def cuda_bindings_dirs() -> list[Path]:
    return sorted(CACHE.glob("cuda-bindings-*")) if CACHE.is_dir() else []


def _skip_if_empty(dirs: list[Path], what: str) -> None:
    if not dirs:
        pytest.skip(f"no cached {what} wheels in {CACHE} (run `make trt-bindings`, or set S3RT_TRT_BINDINGS_CACHE)")


def _has_name(blob: bytes, init_py: str, name: str) -> bool:
    return bool(re.search(rb"[\x00A-Za-z_]" + re.escape(name.encode()) + rb"\x00", blob)) or name in init_py


@pytest.mark.parametrize("major", ["10", "11"])
def test_tensorrt_names_exist(major):
    dirs = [d for d in trt_dirs() if d.name.startswith(f"trt-{major}.")]
    _skip_if_empty(dirs, f"tensorrt {major}.x bindings")
    for d in dirs:
        code = f"import sys; sys.path.insert(0, {str(d)!r}); import tensorrt_bindings as t; print(t.__version__)"
        imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        blob = (d / "tensorrt_bindings" / "tensorrt.so").read_bytes()
        init_py = (d / "tensorrt_bindings" / "__init__.py").read_text()
        missing = [n for n in TRT_NAMES if not _has_name(blob, init_py, n)]
        assert not missing, f"{d.name}: names used by s3rt missing from the bindings: {missing}"
        gated = {n: _has_name(blob, init_py, n) for n in TRT_10_ONLY}
        if major == "10":
            assert all(gated.values()), f"{d.name}: {gated}"
        else:
            assert not any(gated.values()), f"{d.name}: expected gone in 11.x: {gated}"
        if imported.returncode != 0:
            reason = imported.stderr.strip().splitlines()[-1] if imported.stderr.strip() else "?"
            print(f"{d.name}: import failed ({reason}); names checked statically, arity not checked")


@pytest.mark.parametrize("major", ["12", "13"])
def test_cuda_bindings_calls_and_arity(major):
    dirs = [d for d in cuda_bindings_dirs() if d.name.startswith(f"cuda-bindings-{major}.")]
    _skip_if_empty(dirs, f"cuda-bindings {major}.x")
    for d in dirs:
        code = ("import sys, json, inspect; sys.path.insert(0, sys.argv[1]); from cuda.bindings import runtime as r; "
                "print(json.dumps({n: (len(inspect.signature(getattr(r, n)).parameters) if callable(getattr(r, n, None)) "
                "else (-1 if hasattr(r, n) else None)) for n in sys.argv[2:]}))")
        names = [*CUDART_CALLS, *CUDART_TYPES]
        out = subprocess.run([sys.executable, "-c", code, str(d), *names], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            pytest.skip(f"{d.name}: import failed: {out.stderr.strip().splitlines()[-1]}")
        import json
        got = json.loads(out.stdout.strip().splitlines()[-1])
        absent = [n for n, v in got.items() if v is None]
        assert not absent, f"{d.name}: missing {absent}"
        wrong = {n: (got[n], k) for n, k in CUDART_CALLS.items() if got[n] != k}
        assert not wrong, f"{d.name}: arity (bindings, s3rt) differs: {wrong}"


def test_every_cuda_runtime_name_in_the_code_is_checked():
    """A cuda-bindings call added to the code without adding it here would go unchecked."""
    root = Path(__file__).resolve().parents[1]
    used = set()
    for folder in ("runtime", "export", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            used |= set(re.findall(r"\bcudart\.(cuda\w+)", path.read_text()))
    assert used, "no cuda-bindings calls found: the scan is broken"
    unchecked = sorted(used - set(CUDART_CALLS) - set(CUDART_TYPES))
    assert not unchecked, f"cuda-bindings names used but not checked for existence/arity: {unchecked}"
