"""Prometheus metrics of a server, fed by the serving core's output observer.

One registry per server (tests run several servers in one process). Conventions: `s3rt_` prefix,
base units (seconds, bytes), counters end in `_total`, every labelled series exists from the start
at 0 (drop reasons, error classes, control ops and outcomes, refusal reasons) so rates and alerts
work before the first event, `s3rt_build_info` carries version, model and backend, and the
standard process metrics (resident memory, CPU, open fds) are exported. Latency histograms are in
seconds; end-to-end = capture_ts (client wall clock) to the result's hand-off to gRPC, so it is
only meaningful with synchronised clocks (always true on loopback).
"""

from __future__ import annotations

import time
from typing import Any

from s3rt import __version__
from s3rt.optional import optional
from s3rt.runtime.serving import (ControlReply, Dropped, DropReason, FrameFailed, Output, Result, SessionManager,
                                  StreamSession)

prom = optional("prometheus_client", extra="serve")

_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
ERROR_CLASSES = ("InputError", "ShapeError", "ObjectIdError", "CapacityError", "StateError", "StreamClosedError",
                 "BackendError", "ConfigError")
CONTROL_OPS = ("add", "update", "remove", "reset")
REFUSALS = ("max_streams", "auth", "no_first_message")


class ServerMetrics:
    """Counters by drop reason and error, latency histograms, gauges read from the manager."""

    def __init__(self, manager: SessionManager | None = None, *, model: str = "", backend: str = "") -> None:
        p = prom.load()
        self.registry = p.CollectorRegistry()
        r = self.registry
        p.ProcessCollector(registry=r)
        p.PlatformCollector(registry=r)
        p.Gauge("s3rt_build_info", "s3rt version, model and backend of this server (always 1)",
                ["version", "model", "backend"], registry=r).labels(version=__version__, model=model,
                                                                     backend=backend).set(1)
        self.received = p.Counter("s3rt_frames_received", "frames received", registry=r)
        self.processed = p.Counter("s3rt_frames_processed", "frames segmented", registry=r)
        self.dropped = p.Counter("s3rt_frames_dropped", "frames dropped, by reason", ["reason"], registry=r)
        self.errors = p.Counter("s3rt_frame_errors", "frames refused (bad input), by error class", ["error"],
                                registry=r)
        self.controls = p.Counter("s3rt_controls", "control operations, by op and outcome", ["op", "outcome"],
                                  registry=r)
        self.e2e = p.Histogram("s3rt_e2e_latency_seconds", "capture to result", buckets=_BUCKETS, registry=r)
        self.queue = p.Histogram("s3rt_queue_wait_seconds", "receipt to dequeue", buckets=_BUCKETS, registry=r)
        self.inference = p.Histogram("s3rt_inference_seconds", "tracker step", buckets=_BUCKETS, registry=r)
        self.streams_refused = p.Counter("s3rt_streams_refused", "stream calls refused or ended before opening, "
                                         "by reason", ["reason"], registry=r)
        for reason in DropReason:
            self.dropped.labels(reason=reason.value)
        for error in ERROR_CLASSES:
            self.errors.labels(error=error)
        for op in CONTROL_OPS:
            for outcome in ("ok", "error"):
                self.controls.labels(op=op, outcome=outcome)
        for why in REFUSALS:
            self.streams_refused.labels(reason=why)
        if manager is not None:
            stats = manager.stats
            p.Gauge("s3rt_active_streams", "open streams", registry=r).set_function(lambda: stats()["streams"])
            p.Gauge("s3rt_tracked_objects", "objects tracked over all streams",
                    registry=r).set_function(lambda: stats()["objects"])
            p.Gauge("s3rt_state_bytes", "tracker state buffers over all streams",
                    registry=r).set_function(lambda: stats()["state_bytes"])
        self.objects_per_stream = p.Histogram("s3rt_objects_per_stream", "objects tracked, sampled per result",
                                              buckets=(0, 1, 2, 4, 8, 16, 32, 64), registry=r)

    def frame_received(self) -> None:
        self.received.inc()

    def observe(self, session: StreamSession, out: Output) -> None:
        """The core's on_output hook."""
        if isinstance(out, ControlReply):
            self.controls.labels(op=out.op, outcome="ok" if out.ok else "error").inc()
            if out.result is not None:
                self._result(out.result, len(session.objects))
            elif out.op in ("add", "update") and not out.ok:
                self.errors.labels(error=out.error).inc()
        elif isinstance(out, Result):
            self._result(out, len(session.objects))
        elif isinstance(out, Dropped):
            self.dropped.labels(reason=out.reason.value).inc()
        elif isinstance(out, FrameFailed):
            self.errors.labels(error=out.error).inc()

    def _result(self, r: Result, n_objects: int) -> None:
        self.processed.inc()
        self.e2e.observe(max(0.0, time.time() - r.capture_ts))
        self.queue.observe(r.timing.queue_ms / 1000)
        self.inference.observe(r.timing.inference_ms / 1000)
        self.objects_per_stream.observe(n_objects)

    def refused(self, reason: str) -> None:
        self.streams_refused.labels(reason=reason).inc()

    def serve_http(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Start the /metrics endpoint; returns the HTTP server (shutdown() to stop)."""
        p = prom.load()
        started = p.start_http_server(port, addr=addr, registry=self.registry)
        return started[0] if isinstance(started, tuple) else started

    def text(self) -> str:
        return prom.load().generate_latest(self.registry).decode()
