"""`SessionManager`: many streams over one opened backend, with limits and an idle timeout.

The backend (graphs/engines) is opened once and shared; each stream gets its own `Tracker`, so its
state buffers are allocated when the stream opens and freed when it closes. Backends whose graph
calls must not overlap (TensorRT: one execution context) are serialised with one lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s3rt.configs import InferenceConfig
from s3rt.errors import CapacityError, StateError
from s3rt.runtime.backends.base import Backend
from s3rt.runtime.serving.messages import Output
from s3rt.runtime.serving.session import StreamOptions, StreamSession
from s3rt.runtime.tracker import Tracker

log = logging.getLogger(__name__)

TrackerFactory = Callable[[], Tracker]


@dataclass(frozen=True)
class ServingLimits:
    """max_streams open at once; max_objects per stream; idle_timeout_s without a frame or control
    closes a stream and frees its state (None: never)."""

    max_streams: int = 4
    max_objects: int = 8
    idle_timeout_s: float | None = 60.0


def tracker_factory(backend: Backend, settings: InferenceConfig | None = None, *,
                    max_short_side: int | None = 480) -> TrackerFactory:
    """Trackers sharing one (opened) backend; each owns its own state buffers."""
    backend.open()
    return lambda: Tracker(backend, settings, max_short_side=max_short_side)


class SessionManager:
    """Opens, finds, reaps and closes streams. Thread-safe."""

    def __init__(self, make_tracker: TrackerFactory, limits: ServingLimits | None = None, *,
                 defaults: StreamOptions | None = None, thread_safe: bool = True,
                 on_output: Callable[[StreamSession, Output], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.make_tracker = make_tracker
        self.limits = limits or ServingLimits()
        self.defaults = defaults or StreamOptions()
        self._on_output = on_output
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[str, StreamSession] = {}
        self._ids = itertools.count(1)
        # graph calls of a backend that is not thread-safe (Backend.thread_safe) are serialised
        self._infer_lock: Any = None if thread_safe else threading.Lock()
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self.shutting_down = False

    # -- streams -----------------------------------------------------------------------------------
    def open(self, options: StreamOptions | None = None, *, threaded: bool = True,
             name: str | None = None) -> StreamSession:
        """A new stream; CapacityError when max_streams are open, StateError while shutting down.

        The slot is freed by whichever comes first: `close(id)`, or the session closing itself."""
        options = options or self.defaults
        if options.max_objects is None or options.max_objects > self.limits.max_objects:
            options = StreamOptions(**{**options.__dict__, "max_objects": min(options.max_objects or
                                       self.limits.max_objects, self.limits.max_objects)})
        with self._lock:
            if self.shutting_down:
                raise StateError("the server is shutting down; no new streams")
            if len(self._streams) >= self.limits.max_streams:
                raise CapacityError(f"{len(self._streams)} streams open, the limit is {self.limits.max_streams}; "
                                    "close one or start the server with a larger --max-streams")
            stream_id = f"{name or 's'}-{next(self._ids)}"
            # reserve the slot before the (slow) tracker construction
            self._streams[stream_id] = None  # type: ignore[assignment]
        try:
            session = StreamSession(self.make_tracker(), options, stream_id=stream_id, threaded=threaded,
                                    on_output=self._on_output, inference_lock=self._infer_lock, clock=self._clock,
                                    on_close=self._forget)
        except BaseException:
            with self._lock:
                self._streams.pop(stream_id, None)
            raise
        with self._lock:
            self._streams[stream_id] = session
        log.info("stream opened", extra={"stream": stream_id, "event": "open", "deadline_ms": options.deadline_ms,
                                         "latest_frame_wins": options.latest_frame_wins})
        return session

    def get(self, stream_id: str) -> StreamSession:
        with self._lock:
            session = self._streams.get(stream_id)
        if session is None:
            raise StateError(f"no open stream '{stream_id}'")
        return session

    def close(self, stream_id: str, reason: str = "closed by client") -> None:
        """Close and forget a stream (no error if it is already gone)."""
        with self._lock:
            session = self._streams.pop(stream_id, None)
        if session is not None:
            session.close(reason)

    def _forget(self, session: StreamSession) -> None:
        """A session closed itself (its client stopped reading, its reader ended): free its slot."""
        with self._lock:
            if self._streams.get(session.stream_id) is session:
                del self._streams[session.stream_id]

    def sessions(self) -> list[StreamSession]:
        with self._lock:
            return [s for s in self._streams.values() if s is not None]

    # -- idle timeout and shutdown -------------------------------------------------------------
    def reap_idle(self) -> list[str]:
        """Close streams idle longer than the timeout; returns their ids."""
        timeout = self.limits.idle_timeout_s
        if timeout is None:
            return []
        now = self._clock()
        idle = [s.stream_id for s in self.sessions() if now - s.last_active > timeout]
        for stream_id in idle:
            log.info("stream idle", extra={"stream": stream_id, "event": "idle_timeout", "timeout_s": timeout})
            self.close(stream_id, f"idle for more than {timeout:g} s")
        return idle

    def start_reaper(self, interval_s: float | None = None) -> None:
        """A daemon thread that calls reap_idle() every interval (default: a quarter of the timeout)."""
        if self._reaper is not None or self.limits.idle_timeout_s is None:
            return
        interval = interval_s or max(0.05, self.limits.idle_timeout_s / 4)

        def loop() -> None:
            while not self._stop.wait(interval):
                self.reap_idle()

        self._reaper = threading.Thread(target=loop, name="s3rt-reaper", daemon=True)
        self._reaper.start()

    def shutdown(self, reason: str = "server shutting down") -> None:
        """Refuse new streams and close every open one with `reason`."""
        with self._lock:
            self.shutting_down = True
        self._stop.set()
        for session in self.sessions():
            self.close(session.stream_id, reason)

    # -- numbers for Info and metrics ----------------------------------------------------------
    def stats(self) -> dict[str, int]:
        sessions = self.sessions()
        return {"streams": len(sessions), "objects": sum(len(s.objects) for s in sessions),
                "state_bytes": sum(s.state_bytes for s in sessions)}
