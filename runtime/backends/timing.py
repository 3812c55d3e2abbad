"""A timing proxy for any backend: wall time and call count of every `run(graph, ...)`.

    timed = TimedBackend(make_backend("onnxruntime", model_dir="exported/"))
    tracker = Tracker(timed)                  # the tracker sees an ordinary backend
    ...
    timed.stats()   # {"encoder": {"calls": 12, "mean_ms": 41.2, "total_ms": 494.4, ...}, ...}

Every attribute the proxy does not define is forwarded to the wrapped backend, so backend-
specific methods (`set_top_k`, `synchronize`, ...) keep working. `open()` and `with` return the
proxy, not the inner backend, so a tracker keeps calling through it.

Asynchronous devices: a graph call may return before the device is done. Pass `sync` (e.g.
`torch.cuda.synchronize`), or leave it None to use the inner backend's `synchronize()` where
it has one (TensorRT); the proxy then waits before starting and before stopping each clock.
Host backends (torch CPU, ONNX Runtime CPU) need neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from s3rt.runtime.backends.base import Array, Backend


class TimedBackend:
    """Forwards everything to `inner`; records the duration of each `run` per graph name."""

    def __init__(self, inner: Backend, *, sync: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self._sync = sync if sync is not None else getattr(inner, "synchronize", None)
        self._times: dict[str, list[float]] = {}

    # -- the timed call ------------------------------------------------------------------------------
    def run(self, graph: str, inputs: Mapping[str, Array], outputs: Mapping[str, Array]) -> None:
        if self._sync is not None:
            self._sync()
        t0 = time.perf_counter()
        self.inner.run(graph, inputs, outputs)
        if self._sync is not None:
            self._sync()
        self._times.setdefault(graph, []).append(time.perf_counter() - t0)

    # -- statistics ----------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        """Forget the calls so far (e.g. after warm-up)."""
        self._times = {}

    @property
    def calls(self) -> dict[str, int]:
        return {g: len(t) for g, t in self._times.items()}

    def durations_ms(self, graph: str) -> list[float]:
        return [t * 1000 for t in self._times.get(graph, [])]

    def stats(self) -> dict[str, dict[str, float]]:
        """Per graph: calls, mean/p50/max/total milliseconds (graphs in first-call order)."""
        out = {}
        for graph, times in self._times.items():
            ms = np.array(times) * 1000
            out[graph] = {"calls": int(ms.size), "mean_ms": float(ms.mean()), "p50_ms": float(np.median(ms)),
                          "max_ms": float(ms.max()), "total_ms": float(ms.sum())}
        return out

    # -- lifecycle: keep the proxy in front --------------------------------------------------------
    def open(self) -> "TimedBackend":
        self.inner.open()
        return self

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> "TimedBackend":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not found on the proxy: everything else is the inner backend's
        if name.startswith("__") or name in ("inner", "_sync", "_times"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"TimedBackend({self.inner!r})"


Backend.register(TimedBackend)   # isinstance(TimedBackend(b), Backend) holds: it is one, by delegation
