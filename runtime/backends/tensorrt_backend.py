"""TensorRT backend: one engine per graph, cuda-python device buffers, one CUDA stream.

Never imports torch. TensorRT and cuda-python are imported only by `open()` (through
s3rt.optional), so this module imports everywhere; without them `open()` raises
MissingDependencyError naming the extra, without a GPU it raises BackendError.

Buffers are `DeviceArray`s: a device pointer plus shape, dtype and element strides. Indexing with
ints and step-1 slices returns views (pointer offsets), so the tracker's N/NB slices bind in
place; `reshape` works on contiguous arrays. Copies between strided views (the tracker writes one
memory slot into `mem_key[:, :, slot]`) become cudaMemcpy2DAsync calls, planned by the pure
function `plan_copy` (tested without a GPU).

`add_` has no elementwise kernel without torch: it copies both operands to the host, adds with
numpy and uploads the sum (a synchronising round trip). The tracker calls it once per memory
frame, on `object_memory` rows of N*Q*(C+1) floats (8 * 16 * 257 * 4 bytes = 128 KiB at most).

`run` allocates nothing: it sets input shapes and tensor addresses only when they changed
(TensorRT requires 256-byte aligned addresses; the tracker's views are), then enqueues
`execute_async_v3` on the backend's stream. All six execution contexts share one activation
memory block by default (they run one after another on one stream), which matters on Jetson.
"""

from __future__ import annotations

import itertools
import logging
import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from s3rt.configs import InferenceConfig
from s3rt.errors import BackendError, InternalError, ModelFormatError, ShapeError
from s3rt.optional import cuda_bindings, tensorrt
from s3rt.runtime.backends.base import Array, ExportedGraphsBackend
from s3rt.runtime.contract import GRAPH_ORDER
from s3rt.runtime.backends import cuda_env
from s3rt.runtime.engine_manifest import (EngineManifest, MachineInfo, check_compatible, check_onnx_hashes,
                                          load_engine_manifest)
from s3rt.runtime.trt_plugins import PluginLibrary, check_plugins, init_nvidia_plugins, library_version, \
    load_plugin_libraries

log = logging.getLogger(__name__)

ADDRESS_ALIGNMENT = 256     # setTensorAddress: "The pointer must have at least 256-byte alignment."


# -- strided copy planning (pure Python, no CUDA) ------------------------------------------------
class Copy2D(NamedTuple):
    """One cudaMemcpy2DAsync: `height` rows of `width` bytes; offsets and pitches in bytes."""

    dst_offset: int
    dst_pitch: int
    src_offset: int
    src_pitch: int
    width: int
    height: int


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """C-order strides in elements."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def is_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """C-contiguous, ignoring the strides of size-1 axes (as numpy does)."""
    expected = 1
    for d, s in zip(reversed(shape), reversed(strides)):
        if d == 1:
            continue
        if s != expected:
            return False
        expected *= d
    return True


def plan_copy(shape: tuple[int, ...], dst_strides: tuple[int, ...], src_strides: tuple[int, ...],
              itemsize: int) -> list[Copy2D]:
    """Copies that move a `shape` block between two strided layouts (strides in elements).

    Trailing axes contiguous in both layouts form one row; the remaining axes are merged where
    both layouts allow it, the innermost of them becomes the 2-D copy's height and any others
    are enumerated. A fully contiguous pair gives a single row (height 1).
    """
    if len(shape) != len(dst_strides) or len(shape) != len(src_strides):
        raise InternalError(f"plan_copy: rank mismatch {shape} {dst_strides} {src_strides}")
    if any(d == 0 for d in shape):
        return []
    dims = [(d, ds, ss) for d, ds, ss in zip(shape, dst_strides, src_strides) if d != 1]
    width, k = 1, len(dims)
    while k > 0 and dims[k - 1][1] == width and dims[k - 1][2] == width:
        width *= dims[k - 1][0]
        k -= 1
    outer: list[tuple[int, int, int]] = []
    for d, ds, ss in dims[:k]:
        if outer and outer[-1][1] == ds * d and outer[-1][2] == ss * d:
            pd, _, _ = outer[-1]
            outer[-1] = (pd * d, ds, ss)      # merge with the previous (outer) axis
        else:
            outer.append((d, ds, ss))
    if not outer:
        return [Copy2D(0, width * itemsize, 0, width * itemsize, width * itemsize, 1)]
    height, dpitch, spitch = outer[-1]
    plans = []
    for idx in itertools.product(*(range(d) for d, _, _ in outer[:-1])):
        doff = sum(i * ds for i, (_, ds, _) in zip(idx, outer))
        soff = sum(i * ss for i, (_, _, ss) in zip(idx, outer))
        plans.append(Copy2D(doff * itemsize, dpitch * itemsize, soff * itemsize, spitch * itemsize,
                            width * itemsize, height))
    return plans


def _normalize_index(key: Any, shape: tuple[int, ...]) -> list[Any]:
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} for an array of rank {len(shape)}")
    return list(key) + [slice(None)] * (len(shape) - len(key))


class DeviceArray:
    """A typed, possibly strided view of device memory (pointer arithmetic only, no CUDA calls).

    `ptr` is the address of element [0, ..., 0]; strides are in elements. `owner` keeps the
    allocation alive for views.
    """

    __slots__ = ("ptr", "shape", "dtype", "strides", "owner")

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any, strides: tuple[int, ...] | None = None,
                 owner: object = None) -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.strides = tuple(strides) if strides is not None else contiguous_strides(self.shape)
        if len(self.strides) != len(self.shape):
            raise InternalError(f"DeviceArray: {len(self.strides)} strides for shape {self.shape}")
        self.owner = owner

    # numpy-like metadata
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def is_contiguous(self) -> bool:
        return is_contiguous(self.shape, self.strides)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(ptr=0x{self.ptr:x}, shape={self.shape}, dtype={self.dtype}, strides={self.strides})"

    def __getitem__(self, key: Any) -> "DeviceArray":
        offset, shape, strides = 0, [], []
        for k, d, s in zip(_normalize_index(key, self.shape), self.shape, self.strides):
            if isinstance(k, slice):
                start, stop, step = k.indices(d)
                if step != 1:
                    raise IndexError("DeviceArray supports step-1 slices only")
                n = max(0, stop - start)
                offset += start * s if n else 0
                shape.append(n)
                strides.append(s)
            elif isinstance(k, (int, np.integer)):
                i = int(k)
                if not -d <= i < d:
                    raise IndexError(f"index {i} is out of bounds for an axis of size {d}")
                offset += (i % d) * s
            else:
                raise IndexError(f"DeviceArray supports ints, step-1 slices and '...', got {k!r}")
        return DeviceArray(self.ptr + offset * self.itemsize, tuple(shape), self.dtype, tuple(strides),
                           self.owner if self.owner is not None else self)

    def reshape(self, *shape: Any) -> "DeviceArray":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if shape.count(-1) > 1:
            raise ValueError("can only specify one unknown dimension")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
            shape = tuple(self.size // known if d == -1 else d for d in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
        if not self.is_contiguous:
            raise ValueError(f"reshape of a non-contiguous DeviceArray view {self.shape} (strides {self.strides})")
        return DeviceArray(self.ptr, shape, self.dtype, None, self.owner if self.owner is not None else self)


# -- the backend ----------------------------------------------------------------------------------
@dataclass
class _GraphRuntime:
    engine: Any
    context: Any
    inputs: list[str]
    outputs: list[str]
    dtypes: dict[str, np.dtype]
    shapes: dict[str, tuple[int, ...]]        # last shape set per input
    addresses: dict[str, int]                 # last address set per tensor


class TensorRTBackend(ExportedGraphsBackend):
    """Runs engines built by `s3rt build` from an `s3rt export` folder.

    model_dir: the export (manifest.json, *.onnx); engine_dir: the build output (default
    MODEL_DIR/engines). `precision` (optional) must match the engines'. `check_onnx` re-hashes
    the ONNX files at open to catch engines left over from an older export. `plugin_libs`: plugin
    libraries (e.g. build/libs3rt_trt_plugins.so) loaded before deserializing; they must match the
    sha256 recorded at build time (default: the recorded paths).
    """

    name = "tensorrt"

    def __init__(self, model_dir: str | Path, *, engine_dir: str | Path | None = None, device: int = 0,
                 precision: str | None = None, check_onnx: bool = True, allow_other_gpu: bool = False,
                 share_activation_memory: bool = True,
                 plugin_libs: tuple[str | Path, ...] | list[str | Path] = ()) -> None:
        super().__init__(model_dir)
        self.plugin_libs = tuple(plugin_libs)
        self._plugins: list[PluginLibrary] = []
        self.engine_dir = Path(engine_dir) if engine_dir is not None else self.model_dir / "engines"
        self.device = int(device)
        self.precision = precision
        self.check_onnx = check_onnx
        self.allow_other_gpu = allow_other_gpu
        self.share_activation_memory = share_activation_memory
        self._engines: EngineManifest | None = None
        self._graphs: dict[str, _GraphRuntime] = {}
        self._allocations: list[int] = []
        self._stream: Any = None
        self._machine: MachineInfo | None = None

    # -- metadata (reads manifest.json only) ------------------------------------------------------
    @property
    def capacity(self) -> InferenceConfig:
        settings = self.manifest.settings
        built = self._engines.max_objects if self._engines is not None else None
        if built is not None and built < settings.max_objects:
            return replace(settings, max_objects=built)    # engines built with a lower --max-objects
        return settings

    @property
    def engine_manifest(self) -> EngineManifest:
        if self._engines is None:
            self._engines = load_engine_manifest(self.engine_dir)
        return self._engines

    # -- lifecycle --------------------------------------------------------------------------------
    def _open(self) -> None:
        trt = tensorrt.load()                          # MissingDependencyError names the extra
        cudart = cuda_bindings.load()
        self._trt, self._cudart = trt, cudart
        machine = self._probe_machine()                # BackendError without a GPU
        self._machine = machine
        manifest = self.manifest                       # ModelFormatError: export or engines missing
        if manifest.settings.long_term is not None:
            raise BackendError("this export has long-term memory (lt_consolidate/lt_prune graphs), which the "
                               "TensorRT backend does not run yet; use --backend onnxruntime (also with "
                               "--provider tensorrt) or torch")
        engines = self.engine_manifest
        check_compatible(engines, machine, precision=self.precision, allow_other_gpu=self.allow_other_gpu)
        self._plugins = check_plugins(engines.plugins, [PluginLibrary.of(p) for p in self.plugin_libs],
                                      self.engine_dir)
        if self.check_onnx:
            check_onnx_hashes(engines, manifest)
        try:
            self._stream = self._cuda(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                      "cudaStreamCreateWithFlags")
            self._load_engines()
        except BaseException:
            self._close()
            raise
        log.info("TensorRT %s: opened %d %s engines from %s on %s", trt.__version__, len(self._graphs),
                 engines.precision, self.engine_dir, machine.gpu_name)

    def _probe_machine(self) -> MachineInfo:
        cudart = self._cudart
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or not count:
            raise BackendError(f"the TensorRT backend needs an NVIDIA GPU, but CUDA reports none "
                               f"({self._error_text(err) if err != cudart.cudaError_t.cudaSuccess else '0 devices'}; "
                               f"{cuda_env.explain(cudart, err)}); use --backend onnxruntime or torch on this machine")
        if not 0 <= self.device < count:
            raise BackendError(f"--device {self.device}: this machine has {count} CUDA device(s) (0..{count - 1})")
        self._cuda(cudart.cudaSetDevice(self.device), "cudaSetDevice")
        prop = self._cuda(cudart.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        runtime_version = self._cuda(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
        return MachineInfo(tensorrt_version=library_version(self._trt), gpu_name=name.rstrip("\x00").strip(),
                           compute_capability=f"{prop.major}.{prop.minor}",
                           cuda_runtime=f"{runtime_version // 1000}.{(runtime_version % 1000) // 10}")

    def _load_engines(self) -> None:
        trt = self._trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        init_nvidia_plugins(trt, self._logger)           # engines built with the deformable-attention plugin
        load_plugin_libraries(trt, [p.path for p in self._plugins])   # s3rt's fused attention plugin
        self._runtime = trt.Runtime(self._logger)
        engines = {}
        for name in GRAPH_ORDER:
            path = self.engine_manifest.path(name)
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise ModelFormatError(f"TensorRT {trt.__version__} could not deserialize {path} (see the TensorRT "
                                       "log above); rebuild with `s3rt build --model DIR`")
            engines[name] = engine
        shared = self.share_activation_memory and hasattr(trt, "ExecutionContextAllocationStrategy")
        block = 0
        if shared:
            size_of = (lambda e: e.device_memory_size_v2) if hasattr(next(iter(engines.values())),
                                                                     "device_memory_size_v2") \
                else (lambda e: e.device_memory_size)
            size = max(int(size_of(e)) for e in engines.values())
            block = self._malloc(max(size, 1))
            self._shared_size = size
        for name, engine in engines.items():
            if shared:
                context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            else:
                context = engine.create_execution_context()
            if context is None:
                raise BackendError(f"{name}: TensorRT could not create an execution context (out of GPU memory?)")
            if shared:
                if hasattr(context, "set_device_memory"):
                    context.set_device_memory(block, self._shared_size)
                else:                                           # TensorRT 10.0
                    context.device_memory = block
            self._graphs[name] = self._graph_runtime(name, engine, context)

    def _graph_runtime(self, name: str, engine: Any, context: Any) -> _GraphRuntime:
        trt = self._trt
        spec = self.manifest.graphs[name]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if sorted(inputs) != sorted(spec.input_names) or sorted(outputs) != sorted(spec.output_names):
            raise ModelFormatError(f"{name}: engine I/O {inputs} -> {outputs} does not match the manifest "
                                   f"{spec.input_names} -> {spec.output_names}; rebuild with `s3rt build`")
        dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        want = {t.name: np.dtype(t.dtype) for t in (*spec.inputs, *spec.outputs)}
        wrong = {n: (str(dtypes[n]), str(want[n])) for n in names if dtypes[n] != want[n]}
        if wrong:
            raise ModelFormatError(f"{name}: engine tensor dtypes differ from the manifest (engine, manifest): "
                                   f"{wrong}; rebuild with `s3rt build`")
        return _GraphRuntime(engine, context, inputs, outputs, dtypes, {}, {})

    def _close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        self._graphs = {}
        if cudart is not None:
            if self._stream is not None:
                cudart.cudaStreamSynchronize(self._stream)
            for ptr in self._allocations:
                cudart.cudaFree(ptr)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._allocations = []
        self._stream = None

    # -- CUDA helpers ----------------------------------------------------------------------------
    def _error_text(self, err: Any) -> str:
        try:
            _, text = self._cudart.cudaGetErrorString(err)
            return f"{err.name if hasattr(err, 'name') else err}: {text.decode() if isinstance(text, bytes) else text}"
        except Exception:  # noqa: BLE001 - best effort message
            return str(err)

    def _cuda(self, result: tuple, what: str) -> Any:
        err, *values = result
        if err != self._cudart.cudaError_t.cudaSuccess:
            raise BackendError(f"{what} failed: {self._error_text(err)}")
        return values[0] if len(values) == 1 else tuple(values) if values else None

    def _malloc(self, nbytes: int) -> int:
        ptr = int(self._cuda(self._cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)"))
        self._allocations.append(ptr)
        return ptr

    def synchronize(self) -> None:
        self._require_open()
        self._cuda(self._cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    # -- graphs ----------------------------------------------------------------------------------
    def run(self, graph: str, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        self._require_open()
        g = self._graphs.get(graph)
        if g is None:
            raise BackendError(f"unknown graph '{graph}'; graphs: {', '.join(GRAPH_ORDER)}")
        missing = [n for n in g.inputs if n not in inputs] + [n for n in g.outputs if n not in outputs]
        if missing:
            raise ShapeError(f"{graph}: missing buffers {missing}; given inputs {list(inputs)}, outputs {list(outputs)}")
        ctx = g.context
        for name in g.inputs:
            arr = self._bindable(graph, name, inputs[name], g)
            if g.shapes.get(name) != arr.shape:
                if not ctx.set_input_shape(name, arr.shape):
                    lo, opt, hi = g.engine.get_tensor_profile_shape(name, 0)
                    raise ShapeError(f"{graph}.{name}: shape {arr.shape} is outside the engine's profile "
                                     f"(min {tuple(lo)}, max {tuple(hi)}); rebuild with a larger --max-objects")
                g.shapes[name] = arr.shape
            self._bind(ctx, g, name, arr.ptr)
        for name in g.outputs:
            arr = self._bindable(graph, name, outputs[name], g)
            expected = tuple(ctx.get_tensor_shape(name))
            if expected != arr.shape:
                raise ShapeError(f"{graph}.{name}: output buffer {arr.shape}, engine produces {expected} "
                                 "for these input shapes")
            self._bind(ctx, g, name, arr.ptr)
        if not ctx.execute_async_v3(int(self._stream)):
            raise BackendError(f"{graph}: TensorRT execute_async_v3 failed (see the TensorRT log above)")

    def _bindable(self, graph: str, name: str, arr: Any, g: _GraphRuntime) -> DeviceArray:
        if not isinstance(arr, DeviceArray):
            raise InternalError(f"{graph}.{name}: got {type(arr).__name__}; TensorRT buffers must come from "
                                "TensorRTBackend.empty()")
        if arr.dtype != g.dtypes[name]:
            raise ShapeError(f"{graph}.{name}: buffer dtype {arr.dtype}, engine expects {g.dtypes[name]}")
        if not arr.is_contiguous:
            raise InternalError(f"{graph}.{name}: view {arr.shape} with strides {arr.strides} is not contiguous; "
                                "only leading-axis slices can be bound")
        if arr.ptr % ADDRESS_ALIGNMENT:
            raise InternalError(f"{graph}.{name}: address 0x{arr.ptr:x} is not {ADDRESS_ALIGNMENT}-byte aligned, "
                                "as TensorRT requires; bind a view that starts on an aligned row")
        return arr

    @staticmethod
    def _bind(ctx: Any, g: _GraphRuntime, name: str, ptr: int) -> None:
        if g.addresses.get(name) != ptr:
            if not ctx.set_tensor_address(name, ptr):
                raise BackendError(f"TensorRT refused the address of tensor '{name}'")
            g.addresses[name] = ptr

    # -- memory ----------------------------------------------------------------------------------
    def empty(self, shape: tuple[int, ...], dtype: str) -> DeviceArray:
        self._require_open()
        dt = np.dtype(dtype)
        nbytes = max(1, math.prod(shape) * dt.itemsize)
        ptr = self._malloc(nbytes)
        self._cuda(self._cudart.cudaMemsetAsync(ptr, 0, nbytes, self._stream), "cudaMemsetAsync")
        return DeviceArray(ptr, tuple(shape), dt)

    def _memcpy(self, dst: int, dst_strides: tuple[int, ...], src: int, src_strides: tuple[int, ...],
                shape: tuple[int, ...], itemsize: int, kind: Any) -> None:
        cudart = self._cudart
        for c in plan_copy(shape, dst_strides, src_strides, itemsize):
            if c.height == 1 or (c.dst_pitch == c.width and c.src_pitch == c.width):
                self._cuda(cudart.cudaMemcpyAsync(dst + c.dst_offset, src + c.src_offset, c.width * c.height,
                                                  kind, self._stream), "cudaMemcpyAsync")
            else:
                self._cuda(cudart.cudaMemcpy2DAsync(dst + c.dst_offset, c.dst_pitch, src + c.src_offset,
                                                    c.src_pitch, c.width, c.height, kind, self._stream),
                           "cudaMemcpy2DAsync")

    def _check_pair(self, what: str, dst: DeviceArray, shape: tuple[int, ...], dtype: np.dtype) -> None:
        if not isinstance(dst, DeviceArray):
            raise InternalError(f"{what}: destination is {type(dst).__name__}, not a DeviceArray")
        if dst.shape != tuple(shape):
            raise ShapeError(f"{what}: destination {dst.shape}, source {tuple(shape)}")
        if dst.dtype != dtype:
            raise ShapeError(f"{what}: destination dtype {dst.dtype}, source {dtype}")

    def to_host(self, x: Array) -> np.ndarray:
        self._require_open()
        if not isinstance(x, DeviceArray):
            return np.asarray(x)
        out = np.empty(x.shape, x.dtype)
        self._memcpy(out.ctypes.data, contiguous_strides(x.shape), x.ptr, x.strides, x.shape, x.itemsize,
                     self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        self.synchronize()
        return out

    def upload(self, dst: Array, src: np.ndarray) -> None:
        self._require_open()
        host = np.ascontiguousarray(np.asarray(src, dtype=getattr(dst, "dtype", None)))
        self._check_pair("upload", dst, host.shape, host.dtype)
        self._memcpy(dst.ptr, dst.strides, host.ctypes.data, contiguous_strides(host.shape), host.shape,
                     host.itemsize, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        # pageable host memory: the copy has left `host` when cudaMemcpyAsync returns; sync anyway so
        # that a caller reusing `src` right away can never race a pinned-memory implementation
        self.synchronize()

    def copy_(self, dst: Array, src: Array) -> None:
        self._require_open()
        if not isinstance(src, DeviceArray):
            self.upload(dst, np.asarray(src))
            return
        self._check_pair("copy_", dst, src.shape, src.dtype)
        self._memcpy(dst.ptr, dst.strides, src.ptr, src.strides, src.shape, src.itemsize,
                     self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice)

    def add_(self, dst: Array, src: Array) -> None:
        """dst += src through the host (no elementwise kernel without torch; see module docstring)."""
        self._require_open()
        total = self.to_host(dst) + (self.to_host(src) if isinstance(src, DeviceArray) else np.asarray(src))
        self.upload(dst, total.astype(dst.dtype, copy=False))

    def fill_(self, dst: Array, value: float) -> None:
        self._require_open()
        if not isinstance(dst, DeviceArray):
            raise InternalError(f"fill_: destination is {type(dst).__name__}, not a DeviceArray")
        if value != 0:
            self.upload(dst, np.full(dst.shape, value, dst.dtype))
            return
        cudart = self._cudart
        for c in plan_copy(dst.shape, dst.strides, dst.strides, dst.itemsize):
            if c.height == 1 or c.dst_pitch == c.width:
                self._cuda(cudart.cudaMemsetAsync(dst.ptr + c.dst_offset, 0, c.width * c.height, self._stream),
                           "cudaMemsetAsync")
            else:
                self._cuda(cudart.cudaMemset2DAsync(dst.ptr + c.dst_offset, c.dst_pitch, 0, c.width, c.height,
                                                    self._stream), "cudaMemset2DAsync")

    def describe(self) -> dict:
        info = {"backend": self.name, "model_dir": str(self.model_dir), "engine_dir": str(self.engine_dir),
                "device": self.device, "platform": platform.machine()}
        if self._engines is not None:
            info.update(precision=self._engines.precision, built_for=self._engines.machine.describe())
        if self._machine is not None:
            info.update(tensorrt=self._machine.tensorrt_version, gpu=self._machine.gpu_name,
                        compute_capability=self._machine.compute_capability, cuda_runtime=self._machine.cuda_runtime)
        if self._manifest is not None:
            info["config"] = self._manifest.model.name
        return info


def machine_info(device: int = 0) -> MachineInfo:
    """TensorRT version and GPU of this machine (imports TensorRT and cuda-python)."""
    backend = TensorRTBackend(".", device=device)
    backend._trt = tensorrt.load()
    backend._cudart = cuda_bindings.load()
    return backend._probe_machine()


__all__ = ["ADDRESS_ALIGNMENT", "Copy2D", "DeviceArray", "TensorRTBackend", "contiguous_strides", "is_contiguous",
           "machine_info", "plan_copy"]
