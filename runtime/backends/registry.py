"""The backend registry: each backend's typed options, and one way to build a backend.

A backend is built from its own options dataclass (`TorchOptions`, `OnnxRuntimeOptions`,
`TensorRTOptions`), whose fields are exactly its constructor's keywords, so a typo or an option
another backend owns fails at construction instead of being ignored. `create_backend(options)`
picks the class from the options' type and imports it only then (each backend module imports
its heavy dependency lazily, so nothing here loads torch, ONNX Runtime or TensorRT).

Callers that hold the flags of the shared CLI argument group (`s3rt run/serve/replay/bench`, the
ROS node's parameters) fill a `BackendRequest` and call `build_backend(request)`: the request
names the backend, and that backend's options pick the fields they use from it. That is the one
place where a flag like --device becomes a torch device string or a GPU index.

    backend = create_backend(OnnxRuntimeOptions("exported/", threads=2))
    backend = build_backend(BackendRequest("torch", config="tiny"))
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Union

from s3rt.errors import ConfigError

if TYPE_CHECKING:
    from s3rt.configs import ModelConfig
    from s3rt.runtime.backends.base import Backend


@dataclass(frozen=True)
class BackendRequest:
    """The values of the shared CLI backend/model argument group; each backend reads its own.

    backend: registry name; config/weights/seed: the torch model (config defaults to the one
    `model_dir` was exported from); model_dir: an `s3rt export` folder (graph backends);
    device: "cpu" or "cuda[:i]"; provider/threads/host_buffers/opt_level: ONNX Runtime;
    precision: torch autocast dtype or the TensorRT engines' precision; plugin_libs: TensorRT.
    """

    backend: str
    config: str | None = None
    weights: str | Path | None = None
    seed: int = 0
    model_dir: str | Path | None = None
    device: str = "cpu"
    provider: str | None = None
    threads: int | None = None
    precision: str | None = None
    plugin_libs: tuple[str, ...] = ()
    host_buffers: bool = False
    opt_level: str = "all"

    @property
    def gpu_index(self) -> int:
        """The GPU ordinal of `device` ("cuda:1" -> 1; "cuda" or "cpu" -> 0)."""
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    def graphs_dir(self) -> str | Path:
        """model_dir, or a ConfigError saying how to get one (the graph backends need it)."""
        if self.model_dir is None:
            raise ConfigError(f"the {self.backend} backend runs exported graphs: pass --model DIR "
                              "(create one with 's3rt export')")
        return self.model_dir


@dataclass(frozen=True)
class TorchOptions:
    """`TorchBackend`'s constructor keywords (the eager reference model, CPU or CUDA)."""

    config: "str | ModelConfig"
    weights: str | Path | None = None
    device: str = "cpu"
    seed: int = 0
    precision: str = "fp32"
    fused_kernel: bool = True

    @classmethod
    def from_request(cls, r: BackendRequest) -> "TorchOptions":
        config = r.config
        if config is None and r.model_dir is not None:        # the model an export was made from
            from s3rt.runtime.manifest import load_manifest
            config = load_manifest(r.model_dir).model.name
        if config is None and r.weights is not None:          # detected from the checkpoint's keys and shapes
            config = "auto"
        if config is None:
            raise ConfigError("the torch backend needs a model: --config NAME [--weights W], or --weights W alone "
                              "(the config is then detected from the checkpoint)")
        return cls(config, weights=r.weights, device=r.device, seed=r.seed, precision=r.precision or "fp32")


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """`OnnxRuntimeBackend`'s constructor keywords (an export folder on an execution provider)."""

    model_dir: str | Path
    provider: str = "cpu"
    threads: int | None = None
    opt_level: str = "all"
    io_binding: bool = True
    allow_cpu_fallback: bool = False
    trt_cache_dir: str | Path | None = None
    device: int = 0
    host_buffers: bool = False

    @classmethod
    def from_request(cls, r: BackendRequest) -> "OnnxRuntimeOptions":
        provider = r.provider or ("cuda" if r.device.startswith("cuda") else "cpu")
        return cls(r.graphs_dir(), provider=provider, threads=r.threads, opt_level=r.opt_level,
                   device=r.gpu_index, host_buffers=r.host_buffers)


@dataclass(frozen=True)
class TensorRTOptions:
    """`TensorRTBackend`'s constructor keywords (engines built by `s3rt build`)."""

    model_dir: str | Path
    engine_dir: str | Path | None = None
    device: int = 0
    precision: str | None = None
    check_onnx: bool = True
    allow_other_gpu: bool = False
    share_activation_memory: bool = True
    plugin_libs: tuple[str | Path, ...] = field(default=())

    @classmethod
    def from_request(cls, r: BackendRequest) -> "TensorRTOptions":
        return cls(r.graphs_dir(), device=r.gpu_index, precision=r.precision, plugin_libs=tuple(r.plugin_libs))


BackendOptions = Union[TorchOptions, OnnxRuntimeOptions, TensorRTOptions]


@dataclass(frozen=True)
class _Entry:
    options: type
    module: str          # imported only when a backend of this kind is built
    cls: str

    def load(self) -> "type[Backend]":
        return getattr(importlib.import_module(self.module), self.cls)


REGISTRY: dict[str, _Entry] = {
    "torch": _Entry(TorchOptions, "s3rt.runtime.backends.pytorch.backend", "TorchBackend"),
    "onnxruntime": _Entry(OnnxRuntimeOptions, "s3rt.runtime.backends.onnxruntime.backend", "OnnxRuntimeBackend"),
    "tensorrt": _Entry(TensorRTOptions, "s3rt.runtime.backends.tensorrt.backend", "TensorRTBackend"),
}
BACKENDS = tuple(REGISTRY)
# backends that run an `s3rt export` folder (their options start with model_dir)
GRAPH_BACKENDS = tuple(n for n, e in REGISTRY.items() if fields(e.options)[0].name == "model_dir")


def backend_class(name: str) -> "type[Backend]":
    """The class registered as `name` (imports its module, not its heavy dependency)."""
    return _entry(name).load()


def create_backend(options: BackendOptions) -> "Backend":
    """Construct (not open) the backend these options are for."""
    for entry in REGISTRY.values():
        if type(options) is entry.options:
            return entry.load()(**{f.name: getattr(options, f.name) for f in fields(options)})
    raise TypeError(f"not backend options: {type(options).__name__}; use one of "
                    f"{', '.join(e.options.__name__ for e in REGISTRY.values())}")


def options_for(request: BackendRequest) -> BackendOptions:
    """The options of `request.backend` taken from the request (ConfigError for what it lacks)."""
    return _entry(request.backend).options.from_request(request)


def build_backend(request: BackendRequest) -> "Backend":
    """Construct (not open) the backend a CLI/node request names: the one builder they all use."""
    return create_backend(options_for(request))


def _entry(name: str) -> _Entry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}") from None
