"""Backends by name. Each module imports its heavy dependency lazily (on open)."""

from __future__ import annotations

from pathlib import Path

from s3rt.errors import ConfigError
from s3rt.runtime.backends.base import Backend

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def make_backend(name: str, *, config: str | None = None, weights: str | Path | None = None,
                 model_dir: str | Path | None = None, device: str = "cpu", provider: str | None = None,
                 threads: int | None = None, seed: int = 0, precision: str | None = None,
                 plugin_libs: tuple[str, ...] | list[str] = (), host_buffers: bool = False) -> Backend:
    """Construct (not open) a backend. torch needs a config; the graph backends need --model."""
    if name == "torch":
        if config is None and weights is None:
            raise ConfigError("the torch backend needs --config (and optionally --weights), or --weights alone "
                              "(the config is then detected from the checkpoint)")
        from s3rt.runtime.backends.pytorch.backend import TorchBackend
        return TorchBackend(config or "auto", weights=weights, device=device, seed=seed, precision=precision or "fp32")
    if name in ("onnxruntime", "tensorrt") and model_dir is None:
        raise ConfigError(f"the {name} backend runs exported graphs: pass --model DIR "
                          "(create one with 's3rt export')")
    gpu = int(device.split(":")[1]) if ":" in device else 0
    if name == "onnxruntime":
        from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(model_dir, provider=provider or ("cuda" if device.startswith("cuda") else "cpu"),
                                  threads=threads, device=gpu,
                                  host_buffers=host_buffers)
    if name == "tensorrt":
        from s3rt.runtime.backends.tensorrt.backend import TensorRTBackend
        return TensorRTBackend(model_dir, device=gpu, precision=precision, plugin_libs=tuple(plugin_libs))
    raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
