"""ONNX Runtime backend: six sessions, IO binding straight into the tracker's numpy buffers.

Providers are explicit and never fall back silently: the node placement ONNX Runtime logs while
building each GPU session is read (ort_placement) and one with compute nodes on
CPUExecutionProvider is refused unless `allow_cpu_fallback` (a "CUDA" figure must never be a
CPU figure). GPU providers are listed in priority order TensorRT, CUDA, CPU (the CPU provider
takes the shape ops ORT keeps on the host). The TensorRT EP gets the export's optimisation
profile for the object axis (trt_profile_min/opt/max_shapes) and an engine cache folder, so it
neither rebuilds per object count nor per process.

Not done yet: buffers are host numpy arrays for every provider (IO binding to "cpu"), so a GPU
provider copies the memory bank host->device on every call; binding CUDA OrtValues needs the
tracker's buffer ops on device arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from s3rt.errors import BackendError, InternalError, ModelFormatError
from s3rt.optional import onnxruntime as ort_mod
from s3rt.runtime.backends.base import Array, ExportedGraphsBackend
from s3rt.runtime.backends.ort_placement import build_session_with_placement, check_placement
from s3rt.runtime.contract import GRAPH_ORDER, graph_names
from s3rt.runtime.engine_manifest import Profile, optimization_profiles

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
    """Runs an `s3rt export` folder. Buffers are host numpy arrays bound in place (CPU EP)."""

    name = "onnxruntime"

    def __init__(self, model_dir: str | Path, *, provider: str = "cpu", threads: int | None = None,
                 opt_level: str = "all", io_binding: bool = True, allow_cpu_fallback: bool = False,
                 trt_cache_dir: str | Path | None = None) -> None:
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
        self.placement_notes: list[str] = []
        self._bindings: dict = {}

    # -- lifecycle --------------------------------------------------------------------------------
    def _open(self) -> None:
        ort = ort_mod.load()
        self._ort = ort
        wanted = PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise BackendError(f"ONNX Runtime provider {wanted} is not available in this install "
                               f"(onnxruntime {ort.__version__}; available: {', '.join(available)}); "
                               "install onnxruntime-gpu for cuda/tensorrt, or use --provider cpu")
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
            providers = provider_list(self.provider, available, profiles.get(name, {}), cache)
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
        log.debug("opened %d ONNX Runtime sessions on %s", len(self._sessions), wanted)

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
        key = (graph, *((k, v.ctypes.data, v.shape) for k, v in inputs.items()),
               *((k, v.ctypes.data, v.shape) for k, v in outputs.items()))
        binding = self._bindings.get(key)
        if binding is None:
            binding = sess.io_binding()
            for name, arr in inputs.items():
                binding.bind_input(name, "cpu", 0, arr.dtype, list(arr.shape), _ptr(arr, graph, name))
            for name, arr in outputs.items():
                binding.bind_output(name, "cpu", 0, arr.dtype, list(arr.shape), _ptr(arr, graph, name))
            if len(self._bindings) > 256:       # N/NB combinations are few; guard against leaks anyway
                self._bindings.clear()
            self._bindings[key] = binding
        sess.run_with_iobinding(binding)

    def empty(self, shape: tuple[int, ...], dtype: str) -> Array:
        return np.zeros(shape, dtype=np.dtype(dtype))

    def describe(self) -> dict:
        ort = ort_mod.load()
        return {"backend": self.name, "provider": PROVIDERS[self.provider], "onnxruntime": ort.__version__,
                "threads": self.threads or "default", "opt_level": self.opt_level, "config": self.model_config.name,
                "model_dir": str(self.model_dir)}


def shape_list(shapes: dict[str, tuple[int, ...]]) -> str:
    """TensorRT EP profile syntax: "name:1x256x60,other:2x3"."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


def provider_list(provider: str, available: list[str], profile: Profile, cache_dir: Path) -> list:
    """Providers for one session, in priority order, those missing from this install left out.

    TensorRT EP options: explicit profile shapes (one min/opt/max per dynamic input, from the
    export), engine and timing caches under `cache_dir`, fp32 (fp16 is the engine backend's job).
    """
    chain = [p for p in PROVIDER_CHAIN[provider] if p in available or p == PROVIDERS[provider]]
    out: list = []
    for p in chain:
        if p == "TensorrtExecutionProvider":
            opts = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir),
                    "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache_dir),
                    "trt_fp16_enable": "False"}
            if profile:
                opts.update(trt_profile_min_shapes=shape_list({k: v[0] for k, v in profile.items()}),
                            trt_profile_opt_shapes=shape_list({k: v[1] for k, v in profile.items()}),
                            trt_profile_max_shapes=shape_list({k: v[2] for k, v in profile.items()}))
            out.append((p, opts))
        else:
            out.append(p)
    return out


def _ptr(arr: np.ndarray, graph: str, name: str) -> int:
    if not isinstance(arr, np.ndarray) or not arr.flags.c_contiguous:
        raise InternalError(f"{graph}.{name}: buffer is not a C-contiguous numpy array; cannot bind in place")
    return arr.ctypes.data
