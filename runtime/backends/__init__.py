"""Backends by name (see registry.py). Each module imports its heavy dependency lazily (on open)."""

from __future__ import annotations

from s3rt.runtime.backends.base import Backend
from s3rt.runtime.backends.registry import (BACKENDS, BackendOptions, BackendRequest, OnnxRuntimeOptions,
                                            TensorRTOptions, TorchOptions, backend_class, build_backend,
                                            create_backend, options_for)

__all__ = ["BACKENDS", "Backend", "BackendOptions", "BackendRequest", "OnnxRuntimeOptions", "TensorRTOptions",
           "TorchOptions", "backend_class", "build_backend", "create_backend", "make_backend", "options_for"]


def make_backend(name: str, **request: object) -> Backend:
    """Construct (not open) backend `name` from shared-CLI-group fields (see `BackendRequest`)."""
    return build_backend(BackendRequest(name, **request))  # type: ignore[arg-type]
