"""A served backend's graph calls overlap across streams only where the backend declares itself
thread-safe (Backend.thread_safe); TensorRT-like backends are serialised by the manager."""

from __future__ import annotations

import threading
import time

import pytest

from s3rt_serving.serving_helpers import make_clip
from s3rt.runtime.serving import StreamOptions
from s3rt.runtime.serving.grpc.server import ServerConfig, build_server


class OverlapProbe:
    """Forwards to `inner`, declares `thread_safe`, and records how many run() calls overlap."""

    def __init__(self, inner, thread_safe: bool) -> None:
        self.inner, self.thread_safe = inner, thread_safe
        self._lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def run(self, graph, inputs, outputs):
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(0.01)                 # widen the window in which another stream could enter
            self.inner.run(graph, inputs, outputs)
        finally:
            with self._lock:
                self.in_flight -= 1

    def open(self):
        self.inner.open()
        return self

    def __getattr__(self, name):
        if name.startswith("__") or name in ("inner", "thread_safe", "_lock", "in_flight", "max_in_flight"):
            raise AttributeError(name)
        return getattr(self.inner, name)


@pytest.mark.parametrize("thread_safe", [False, True])
def test_graph_calls_overlap_only_on_thread_safe_backends(backend, thread_safe):
    probe = OverlapProbe(backend, thread_safe)
    server = build_server(probe, config=ServerConfig(port=0))
    frames, mask = make_clip(6)
    streams = [server.manager.open(StreamOptions.every_frame()) for _ in range(2)]

    def feed(s) -> None:
        assert s.add_objects(mask, frames[0]).ok
        for i, f in enumerate(frames[1:], 1):
            s.submit(f, seq=i)
        assert s.drain(timeout=60)

    threads = [threading.Thread(target=feed, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    server.manager.shutdown("test over")
    assert probe.in_flight == 0
    assert probe.max_in_flight == (2 if thread_safe else 1)
