"""ONNX Runtime backend: six sessions, IO binding straight into the tracker's buffers.

Providers are explicit and never fall back silently: the node placement ONNX Runtime logs while
building each GPU session is read (ort_placement) and one with compute nodes on
CPUExecutionProvider is refused unless `allow_cpu_fallback` (a "CUDA" figure must never be a
CPU figure). GPU providers are listed in priority order TensorRT, CUDA, CPU (the CPU provider
takes the shape ops ORT keeps on the host). The TensorRT EP gets the export's optimisation
profile for the object axis (trt_profile_min/opt/max_shapes) and an engine cache folder, so it
neither rebuilds per object count nor per process.

Where the buffers live: with the CPU provider they are host numpy arrays; with the CUDA and
TensorRT providers they are CUDA allocations (cuda_memory.DeviceArray, the same device arrays the
TensorRT backend uses) bound as "cuda" tensors, so the memory bank, sensory and object memory stay
on the GPU and no graph call copies them (the tracker's slot writes are device-to-device copies).
`host_buffers=True` keeps host numpy buffers for a GPU provider (ORT then copies every input to
the device per call), e.g. where cuda-bindings is not installed. ONNX Runtime does not wait for
other CUDA streams before a run but synchronises its own at the end of one, so `run` first waits
for copies still queued on the buffers' stream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from s3rt.errors import BackendError, InternalError, MissingDependencyError, ModelFormatError
from s3rt.optional import cuda_bindings
from s3rt.optional import onnxruntime as ort_mod
from s3rt.runtime.backends.base import Array, ExportedGraphsBackend
from s3rt.runtime.backends.cuda.memory import CudaMemory, DeviceArray
from s3rt.runtime.backends.onnxruntime.placement import build_session_with_placement, check_placement
from s3rt.runtime.contract import GRAPH_ORDER, graph_names
from s3rt.runtime.backends.tensorrt.engines import Profile, optimization_profiles

log = logging.getLogger(__name__)

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
              "all": "ORT_ENABLE_ALL"}
# what a session is given for each --provider, in priority order
PROVIDER_CHAIN = {"cpu": ("CPUExecutionProvider",),
                  "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
                  "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


class OnnxRuntimeBackend(ExportedGraphsBackend):
    """Runs an `s3rt export` folder. Buffers are bound in place: host numpy arrays for the CPU
    provider, CUDA device arrays on GPU `device` for the CUDA/TensorRT providers."""

    name = "onnxruntime"
    thread_safe = True      # InferenceSession runs are thread-safe; IO bindings are per buffer address (per tracker)

    def __init__(self, model_dir: str | Path, *, provider: str = "cpu", threads: int | None = None,
                 opt_level: str = "all", io_binding: bool = True, allow_cpu_fallback: bool = False,
                 trt_cache_dir: str | Path | None = None, device: int = 0, host_buffers: bool = False) -> None:
        super().__init__(model_dir)
        if provider not in PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime provider '{provider}'; choose one of {', '.join(PROVIDERS)}")
        if opt_level not in OPT_LEVELS:
            raise BackendError(f"unknown graph optimisation level '{opt_level}'; choose one of {', '.join(OPT_LEVELS)}")
        self.provider = provider
        self.threads = threads
        self.opt_level = opt_level
        self.io_binding = io_binding
        self.allow_cpu_fallback = allow_cpu_fallback
        self.trt_cache_dir = Path(trt_cache_dir) if trt_cache_dir is not None else None
        self.device = int(device)
        self.host_buffers = host_buffers or provider == "cpu"
        if not self.host_buffers and not io_binding:
            raise BackendError("io_binding=False needs host buffers: device buffers can only be bound "
                               "(pass host_buffers=True with a GPU provider)")
        self.placement_notes: list[str] = []
        self._bindings: dict = {}
        self._mem: CudaMemory | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def _open(self) -> None:
        ort = ort_mod.load()
        self._ort = ort
        wanted = PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise BackendError(f"ONNX Runtime provider {wanted} is not available in this install "
                               f"(onnxruntime {ort.__version__}; available: {', '.join(available)}); "
                               "for cuda/tensorrt install the onnxruntime-gpu build of the driver's CUDA major "
                               "(s3rt[onnxruntime-gpu-cu12] or s3rt[onnxruntime-gpu-cu13]), or use --provider cpu")
        if not self.host_buffers:
            # before any session: a TensorRT-provider build can take minutes, and must not end on a
            # missing cuda-bindings or a driver/runtime mismatch that is known right now
            self._mem = CudaMemory(self._load_cudart(), self.device)
        try:
            self._open_sessions(ort, wanted, available)
        except BaseException:
            self._close()
            raise
        log.debug("opened %d ONNX Runtime sessions on %s", len(self._sessions), wanted)

    def _load_cudart(self):
        try:
            return cuda_bindings.load()
        except MissingDependencyError as exc:
            raise MissingDependencyError(
                f"{exc}. The {self.provider} provider keeps the tracker's state on the GPU through cuda-bindings "
                "of the driver's CUDA major: pip install \"s3rt[onnxruntime-gpu-cu12]\" (CUDA 12 drivers) or "
                "\"s3rt[onnxruntime-gpu-cu13]\" (CUDA 13), or keep host buffers (--ort-host-buffers; every call "
                "then copies the memory bank)") from exc

    def _open_sessions(self, ort, wanted: str, available: list[str]) -> None:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[self.opt_level])
        if self.threads:
            opts.intra_op_num_threads = self.threads
        opts.log_severity_level = 2          # warnings stay visible
        # six sessions run one after another: idle pool threads that keep spinning would steal the
        # cores from the next graph (measured: 0.67x torch with spinning, 1.5-1.9x without)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions = {}
        self.placement_notes = []
        profiles = optimization_profiles(self.manifest) if self.provider == "tensorrt" else {}
        for name in graph_names(self.manifest.settings):     # + lt_* graphs in long-term exports
            path = self.manifest.path(name)
            cache = self._trt_cache(name)
            if self.provider == "tensorrt":
                cache.mkdir(parents=True, exist_ok=True)
            providers = provider_list(self.provider, available, profiles.get(name, {}), cache, device=self.device)
            # a CPU session has no placement to verify: no verbose build log, no capture of fd 2
            # (which would also swallow other threads' stderr while the session builds)
            verify = wanted != "CPUExecutionProvider"
            try:
                if verify:
                    sess, placement = build_session_with_placement(ort, str(path), opts, providers)
                else:
                    sess = ort.InferenceSession(str(path), opts, providers=providers)
            except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
                raise ModelFormatError(f"ONNX Runtime cannot load {path}: {exc}") from exc
            if sess.get_providers()[0] != wanted:
                raise BackendError(f"{name}: asked for {wanted}, session runs on {sess.get_providers()}")
            if verify:
                self.placement_notes += check_placement(placement, wanted, name,
                                                        allow_cpu_compute=self.allow_cpu_fallback)
            self._check_io(name, sess)
            self._sessions[name] = sess
        for note in self.placement_notes:
            log.warning("%s", note)

    def _trt_cache(self, graph: str) -> Path:
        root = self.trt_cache_dir if self.trt_cache_dir is not None else self.model_dir / "ort_trt_cache"
        return root / graph

    def _check_io(self, graph: str, sess: object) -> None:
        spec = self.manifest.graphs[graph]
        got_in = [(i.name, _ORT_TYPES.get(i.type, i.type)) for i in sess.get_inputs()]
        got_out = [(o.name, _ORT_TYPES.get(o.type, o.type)) for o in sess.get_outputs()]
        want_in = [(t.name, t.dtype) for t in spec.inputs]
        want_out = [(t.name, t.dtype) for t in spec.outputs]
        if got_in != want_in or got_out != want_out:
            raise ModelFormatError(f"{graph}: graph I/O {got_in} -> {got_out} does not match the manifest "
                                   f"{want_in} -> {want_out}; re-export the model")

    def _close(self) -> None:
        self._sessions = {}
        self._bindings = {}
        if self._mem is not None:
            self._mem.close()
        self._mem = None

    # -- running ----------------------------------------------------------------------------------
    def run(self, graph: str, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        self._require_open()
        sess = self._sessions.get(graph)
        if sess is None:
            raise BackendError(f"unknown graph '{graph}'; graphs: {', '.join(GRAPH_ORDER)}")
        if not self.io_binding:
            results = sess.run(list(outputs), {k: np.ascontiguousarray(v) for k, v in inputs.items()})
            for dst, res in zip(outputs.values(), results):
                dst[...] = res
            return
        ins = {k: bind_target(v, graph, k, self.device) for k, v in inputs.items()}
        outs = {k: bind_target(v, graph, k, self.device) for k, v in outputs.items()}
        key = (graph, *ins.items(), *outs.items())
        binding = self._bindings.get(key)
        if binding is None:
            binding = sess.io_binding()
            for name, t in ins.items():
                binding.bind_input(name, t.device_type, t.device_id, t.dtype, list(t.shape), t.ptr)
            for name, t in outs.items():
                binding.bind_output(name, t.device_type, t.device_id, t.dtype, list(t.shape), t.ptr)
            if len(self._bindings) > 256:       # N/NB combinations are few; guard against leaks anyway
                self._bindings.clear()
            self._bindings[key] = binding
        if self._mem is not None:
            self._mem.sync_pending()            # slot writes queued on our stream (by any thread) land first
        sess.run_with_iobinding(binding)

    # -- memory: numpy (CPU provider) or CUDA device arrays (GPU providers) -------------------------
    def empty(self, shape: tuple[int, ...], dtype: str) -> Array:
        if self._mem is not None:
            return self._mem.empty(shape, dtype)
        return np.zeros(shape, dtype=np.dtype(dtype))

    def to_host(self, x: Array) -> np.ndarray:
        return self._mem.to_host(x) if self._mem is not None else super().to_host(x)

    def upload(self, dst: Array, src: np.ndarray) -> None:
        self._mem.upload(dst, src) if self._mem is not None else super().upload(dst, src)

    def copy_(self, dst: Array, src: Array) -> None:
        self._mem.copy_(dst, src) if self._mem is not None else super().copy_(dst, src)

    def add_(self, dst: Array, src: Array) -> None:
        self._mem.add_(dst, src) if self._mem is not None else super().add_(dst, src)

    def fill_(self, dst: Array, value: float) -> None:
        self._mem.fill_(dst, value) if self._mem is not None else super().fill_(dst, value)

    def describe(self) -> dict:
        ort = ort_mod.load()
        return {"backend": self.name, "provider": PROVIDERS[self.provider], "onnxruntime": ort.__version__,
                "threads": self.threads or "default", "opt_level": self.opt_level, "config": self.model_config.name,
                "buffers": "host" if self.host_buffers else f"cuda:{self.device}",
                "model_dir": str(self.model_dir)}


def shape_list(shapes: dict[str, tuple[int, ...]]) -> str:
    """TensorRT EP profile syntax: "name:1x256x60,other:2x3"."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


def provider_list(provider: str, available: list[str], profile: Profile, cache_dir: Path, *,
                  device: int = 0) -> list:
    """Providers for one session, in priority order, those missing from this install left out.

    GPU providers run on `device` (the buffers' GPU). TensorRT EP options: explicit profile shapes
    (one min/opt/max per dynamic input, from the export), engine and timing caches under
    `cache_dir`, fp32 (fp16 is the engine backend's job).
    """
    chain = [p for p in PROVIDER_CHAIN[provider] if p in available or p == PROVIDERS[provider]]
    out: list = []
    for p in chain:
        if p == "TensorrtExecutionProvider":
            opts = {"device_id": str(device), "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
                    "trt_fp16_enable": "False"}
            if profile:
                opts.update(trt_profile_min_shapes=shape_list({k: v[0] for k, v in profile.items()}),
                            trt_profile_opt_shapes=shape_list({k: v[1] for k, v in profile.items()}),
                            trt_profile_max_shapes=shape_list({k: v[2] for k, v in profile.items()}))
            out.append((p, opts))
        elif p == "CUDAExecutionProvider":
            out.append((p, {"device_id": str(device)}))
        else:
            out.append(p)
    return out


class BindTarget(NamedTuple):
    """Where one bound tensor lives, as IOBinding.bind_input/bind_output take it."""

    device_type: str        # "cpu" or "cuda"
    device_id: int
    dtype: np.dtype
    shape: tuple[int, ...]
    ptr: int


def bind_target(arr: Array, graph: str, name: str, device: int) -> BindTarget:
    """Host numpy buffers bind as "cpu", DeviceArray views as "cuda" on `device`; both must be
    contiguous (a view of leading-axis slices is)."""
    if isinstance(arr, DeviceArray):
        if not arr.is_contiguous:
            raise InternalError(f"{graph}.{name}: device view {arr.shape} with strides {arr.strides} is not "
                                "contiguous; only leading-axis slices can be bound")
        return BindTarget("cuda", device, arr.dtype, arr.shape, arr.ptr)
    if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous:
        raise InternalError(f"{graph}.{name}: buffer is not a C-contiguous numpy array; cannot bind in place")
    return BindTarget("cpu", 0, arr.dtype, arr.shape, arr.ctypes.data)
