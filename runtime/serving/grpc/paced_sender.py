"""Send a clip to a server at a paced rate and collect every output with its end-to-end latency.

Shared by `s3rt stream` and `s3rt bench --stream`, so both measure the same way: capture_ts is
stamped when a frame is sent (it was "captured" then), latency = output arrival - capture_ts,
both on this machine's wall clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from s3rt.runtime.serving.grpc.client import StreamClient
from s3rt.runtime.serving.messages import Dropped, FrameFailed, ObjectId, Output, Result


@dataclass
class ReplayStats:
    sent: int = 0
    results: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)     # per Result, in seq order
    wall_s: float = 0.0

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms or [np.nan])
        return {"sent": self.sent, "results": self.results, "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()), "errors": self.errors,
                "fps_out": self.results / self.wall_s if self.wall_s else None,
                "e2e_ms": {q: float(np.nanpercentile(lat, p)) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}}


def replay(stream: StreamClient, first: np.ndarray, mask: np.ndarray, frames: Iterable[np.ndarray], *,
           fps: float | None = None, ids: dict[int, ObjectId] | None = None,
           on_output: Callable[[Output, np.ndarray | None], None] | None = None,
           stats: ReplayStats | None = None, in_flight: int = 8) -> ReplayStats:
    """Add the objects on `first`, send `frames` paced at `fps` (None/0: as fast as possible), half-close
    and collect every output. `on_output(out, frame)` sees each output with the frame it belongs to.

    Unpaced, at most `in_flight` frames are sent ahead of their outputs, so a long clip is not queued
    whole in memory while the server works. `stats` (optional) is filled as it goes, so a caller
    stopped half-way (Ctrl-C, the server gone) still has the counts so far.
    """
    stats = stats if stats is not None else ReplayStats()
    sent: dict[int, np.ndarray] = {}
    window = threading.BoundedSemaphore(max(1, in_flight))
    t_start = time.time()
    reply = stream.add_objects(mask, first, ids=ids, seq=0, capture_ts=t_start)
    stats.sent = 1
    _account(stats, reply.result, stream.received_at[0] - t_start)
    if on_output is not None:
        on_output(reply.result, first)
    period = 1.0 / fps if fps else 0.0

    def consume() -> None:                     # outputs are handled while frames are still being sent
        try:
            for out in stream.outputs():
                if out.seq == 0:
                    continue
                _account(stats, out, stream.received_at.get(out.seq, time.time()) - out.capture_ts)
                if on_output is not None:
                    on_output(out, sent.pop(out.seq, None))
                if not period:
                    window.release()
        finally:
            done.set()

    done = threading.Event()
    reader = threading.Thread(target=consume, name="s3rt-replay", daemon=True)
    reader.start()
    t0 = time.time()
    for i, frame in enumerate(frames, 1):
        if period:
            delay = t0 + i * period - time.time()
            if delay > 0:
                time.sleep(delay)
        else:
            while not window.acquire(timeout=0.5):
                if done.is_set():               # the stream ended: nothing more will be answered
                    break
        stamp = time.time()
        stream.send(frame, seq=i, capture_ts=stamp)
        if on_output is not None:
            sent[i] = frame
        stats.sent += 1
    stream.close()
    reader.join()
    stats.wall_s = time.time() - t_start
    return stats


def _account(stats: ReplayStats, out: Output, latency_s: float) -> None:
    if isinstance(out, Result):
        stats.results += 1
        stats.latencies_ms.append(latency_s * 1000)
    elif isinstance(out, Dropped):
        stats.dropped[out.reason.value] = stats.dropped.get(out.reason.value, 0) + 1
    elif isinstance(out, FrameFailed):
        stats.errors += 1
