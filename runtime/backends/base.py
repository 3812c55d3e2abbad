"""The backend interface: run one subgraph on named buffers the tracker owns.

A backend allocates arrays on its device (`empty`), runs a graph writing into the output
arrays it is handed (state buffers are bound, never copied back and forth), and offers the few
in-place array operations the tracker needs to update state. Construction does no work;
`open()` loads graphs/engines. Names and shapes follow s3rt.runtime.contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from s3rt.configs import InferenceConfig, ModelConfig
from s3rt.errors import StateError

Array = Any   # numpy.ndarray, torch.Tensor, or a backend's device array


class Backend(ABC):
    """Subclasses implement `_open`, `run`, `empty`; array ops default to numpy-like semantics."""

    name: str = "base"

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

    @property
    def top_k(self) -> int | None:
        """top-k baked into the readout graph (None: the tracker's setting is used)."""
        return None

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
