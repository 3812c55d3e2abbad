"""TensorRT backend: one engine per graph, cuda-python device buffers, one CUDA stream.

Never imports torch. TensorRT and cuda-python are imported only by `open()` (through
s3rt.optional), so this module imports everywhere; without them `open()` raises
MissingDependencyError naming the extra, without a GPU it raises BackendError.

Buffers are `DeviceArray`s from s3rt.runtime.backends.cuda.memory (shared with ONNX Runtime's GPU
providers): device pointers with shape, dtype and strides, whose views bind in place and whose
strided copies are planned without a GPU.

`run` allocates nothing: it sets input shapes and tensor addresses only when they changed
(TensorRT requires 256-byte aligned addresses; the tracker's views are), then enqueues
`execute_async_v3` on the backend's stream. All six execution contexts share one activation
memory block by default (they run one after another on one stream), which matters on Jetson.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from s3rt.configs import InferenceConfig
from s3rt.errors import BackendError, InternalError, ModelFormatError, ShapeError
from s3rt.optional import cuda_bindings, tensorrt
from s3rt.runtime.backends.base import Array, ExportedGraphsBackend
from s3rt.runtime.contract import GRAPH_ORDER
from s3rt.runtime.backends.cuda.memory import (Copy2D, CudaMemory, DeviceArray, contiguous_strides, is_contiguous,
                                               plan_copy)
from s3rt.runtime.backends.tensorrt.engines import (EngineManifest, MachineInfo, check_compatible, check_onnx_hashes,
                                          load_engine_manifest)
from s3rt.runtime.backends.tensorrt.plugins import PluginLibrary, check_plugins, init_nvidia_plugins, load_plugin_libraries
from s3rt.runtime.backends.tensorrt.provenance import this_machine

log = logging.getLogger(__name__)

ADDRESS_ALIGNMENT = 256     # setTensorAddress: "The pointer must have at least 256-byte alignment."


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
    thread_safe = False     # one execution context and stream per graph: calls must not overlap

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
        self._mem: CudaMemory | None = None
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
        machine = this_machine(self.device, trt=trt, cudart=cudart)   # BackendError without a GPU
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
            self._mem = CudaMemory(cudart, self.device)
            self._load_engines()
        except BaseException:
            self._close()
            raise
        log.info("TensorRT %s: opened %d %s engines from %s on %s", trt.__version__, len(self._graphs),
                 engines.precision, self.engine_dir, machine.gpu_name)

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
            block = self._mem.malloc(max(size, 1))
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
        self._graphs = {}
        if self._mem is not None:
            self._mem.close()
        self._mem = None

    # -- CUDA helpers ----------------------------------------------------------------------------
    @property
    def _stream(self) -> Any:
        return self._mem.stream if self._mem is not None else None

    def synchronize(self) -> None:
        self._require_open()
        self._mem.synchronize()

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

    # -- memory: the tracker's state lives on the GPU (CudaMemory) ----------------------------------
    def empty(self, shape: tuple[int, ...], dtype: str) -> DeviceArray:
        self._require_open()
        return self._mem.empty(shape, dtype)

    def to_host(self, x: Array) -> np.ndarray:
        self._require_open()
        return self._mem.to_host(x)

    def upload(self, dst: Array, src: np.ndarray) -> None:
        self._require_open()
        self._mem.upload(dst, src)

    def copy_(self, dst: Array, src: Array) -> None:
        self._require_open()
        self._mem.copy_(dst, src)

    def add_(self, dst: Array, src: Array) -> None:
        self._require_open()
        self._mem.add_(dst, src)

    def fill_(self, dst: Array, value: float) -> None:
        self._require_open()
        self._mem.fill_(dst, value)

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


__all__ = ["ADDRESS_ALIGNMENT", "Copy2D", "DeviceArray", "TensorRTBackend", "contiguous_strides", "is_contiguous",
           "plan_copy"]
