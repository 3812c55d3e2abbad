"""The backend interface: run one subgraph on named buffers the tracker owns.

A backend allocates arrays on its device (`empty`), runs a graph writing into the output
arrays it is handed (state buffers are bound, never copied back and forth), and offers the few
in-place array operations the tracker needs to update state. Construction does no work;
`open()` loads graphs/engines. Names and shapes follow s3rt.runtime.contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from s3rt.configs import InferenceConfig, ModelConfig
from s3rt.errors import ConfigError, StateError

if TYPE_CHECKING:
    from s3rt.runtime.manifest import Manifest

Array = Any   # numpy.ndarray, torch.Tensor, or a backend's device array


class Backend(ABC):
    """Subclasses implement `_open`, `run`, `empty`; array ops default to numpy-like semantics."""

    name: str = "base"
    # may run() be called from several threads at once (one tracker per thread)? The serving
    # manager serialises graph calls on backends that say no (TensorRT: one execution context).
    thread_safe: bool = False

    def __init__(self) -> None:
        self._opened = False

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> "Backend":
        if not self._opened:
            self._open()
            self._opened = True
        return self

    def close(self) -> None:
        if self._opened:
            self._close()
            self._opened = False

    def __enter__(self) -> "Backend":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:  # pragma: no cover - trivial default
        pass

    def _close(self) -> None:  # pragma: no cover - trivial default
        pass

    def _require_open(self) -> None:
        if not self._opened:
            raise StateError(f"{self.name} backend used before open(); call open() or use 'with'")

    # -- what the tracker needs to know ----------------------------------------------------------
    @property
    @abstractmethod
    def model_config(self) -> ModelConfig: ...

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(height, width) of the working resolution the graphs were built for, or None if any."""
        return None

    @property
    def capacity(self) -> InferenceConfig | None:
        """Memory/object capacity the graphs were exported with (None: chosen by the tracker)."""
        return None

    def carried_defaults(self) -> list:
        """Inference settings the model carries, lowest precedence first (s3rt.inference_settings):
        a weights sidecar or an export manifest's recorded defaults; [] when none."""
        return []

    @property
    def top_k(self) -> int | None:
        """top-k baked into the readout graph (None: the tracker's setting is used)."""
        return None

    def tracker_settings(self, requested: InferenceConfig | None) -> InferenceConfig | None:
        """What a Tracker on this backend is given when a user asked for `requested` (CLI loop
        flags, node parameters): a backend that builds its graphs per run honours them."""
        return requested

    # -- graphs and memory -----------------------------------------------------------------------
    @abstractmethod
    def run(self, graph: str, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        """Run `graph` on named inputs, writing every named output in place."""

    @abstractmethod
    def empty(self, shape: tuple[int, ...], dtype: str) -> Array:
        """A zero-filled array on the backend's device."""

    def to_host(self, x: Array) -> np.ndarray:
        """A host copy (never a view of a state buffer: results must not change later)."""
        return np.array(x, copy=True)

    def upload(self, dst: Array, src: np.ndarray) -> None:
        dst[...] = src

    def copy_(self, dst: Array, src: Array) -> None:
        dst[...] = src

    def add_(self, dst: Array, src: Array) -> None:
        dst[...] += src

    def fill_(self, dst: Array, value: float) -> None:
        dst[...] = value

    def describe(self) -> dict:
        """Backend, device and versions, for reports and benchmark JSON."""
        return {"backend": self.name}


class ExportedGraphsBackend(Backend):
    """A backend that runs an `s3rt export` folder: sizes and capacity come from its manifest."""

    def __init__(self, model_dir: "str | Path") -> None:
        super().__init__()
        self.model_dir = Path(model_dir)
        self._manifest: "Manifest | None" = None

    @property
    def manifest(self) -> "Manifest":
        if self._manifest is None:
            from s3rt.runtime.manifest import load_manifest
            self._manifest = load_manifest(self.model_dir)
        return self._manifest

    @property
    def model_config(self) -> ModelConfig:
        return self.manifest.model

    @property
    def fixed_size(self) -> tuple[int, int]:
        return (self.manifest.height, self.manifest.width)

    @property
    def capacity(self) -> InferenceConfig:
        return self.manifest.settings

    def carried_defaults(self) -> list:
        from s3rt.inference_settings import manifest_defaults
        return [manifest_defaults(self.manifest.inference_defaults, self.manifest.settings)]

    @property
    def top_k(self) -> int:
        return self.manifest.settings.top_k

    def tracker_settings(self, requested: InferenceConfig | None) -> None:
        """None: exported graphs run the memory settings they were exported with (the tracker
        reads them from `capacity` when it opens the backend); asking for other long-term
        settings than the export's is a ConfigError, since graphs cannot change them."""
        wanted = requested.long_term if requested is not None else None
        exported = self.manifest.settings.long_term
        if wanted is not None and wanted != exported:
            raise ConfigError(f"--long-term/--lt-* ask for {wanted}, but the graphs in {self.model_dir} were "
                              f"exported with long_term={exported}; re-export with 's3rt export --long-term ...' "
                              "(graph backends run the export's memory settings)")
        return None
