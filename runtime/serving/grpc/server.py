"""The gRPC server: one bidirectional `Stream` per camera over a SessionManager, plus Info and health.

Per stream: the handler reads the first request (`open`, optional), opens a session and answers
`opened`; a reader thread feeds the following requests to the session in order (frames ->
submit, controls -> control), and the handler yields the session's outputs as they come. A bad
frame or control yields an error message for it and the stream goes on; nothing a client sends
ends the server. Status codes: RESOURCE_EXHAUSTED (stream limit), UNAUTHENTICATED (token),
UNAVAILABLE (server shutting down), ABORTED (stream closed after its idle timeout).

Message sizes: frames above `max_frame_bytes` get a FrameError (the stream goes on); gRPC's own
limit is set above that (2 x max_frame_bytes + 1 MiB, room for a frame and its mask), and only a
message beyond it ends that one stream with RESOURCE_EXHAUSTED. Compressed frames and masks are
refused from their header when they would decode to more than `max_image_pixels`.

One client cannot take the server from the others: a Stream call must send its first message
within `first_message_timeout_s` (else it is cancelled); Stream calls, open or still opening, hold
at most `max_streams + max_opening` of the gRPC threads, and `UNARY_RESERVE` more serve Info,
health and reflection whatever the streams do; every exit of a Stream call (cancel before,
during or after open, error, deadline) frees its slot.

Auth: `authorization: Bearer <token>` (the gRPC convention) or `x-s3rt-token: <token>`. Server
reflection is on, so grpcurl / grpcui work without the .proto.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from concurrent import futures
from dataclasses import dataclass, replace
from typing import Any

from s3rt import __version__
from s3rt.errors import CapacityError, ConfigError, InputError, S3rtError, StateError
from s3rt.runtime.serving import (ControlReply, FrameFailed, ServingLimits, SessionManager, StreamOptions,
                                  StreamSession)
from s3rt.runtime.serving.controls import AddObjects, RemoveObjects, Reset, UpdateObjects
from s3rt.runtime.serving.grpc import codec
from s3rt.runtime.serving.grpc.metrics import ServerMetrics
from s3rt.runtime.serving.grpc.stubs import load

pb, pb_grpc = load()
import grpc  # noqa: E402  (after load(): a clear MissingDependencyError first)

log = logging.getLogger(__name__)

TOKEN_KEY = "x-s3rt-token"
UNARY_RESERVE = 8                        # gRPC threads Stream calls can never take (Info, health, reflection)
MAX_NAME = 256                           # characters of a stream name


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051                    # 0: pick a free port (see Server.port)
    max_frame_bytes: int = 32 << 20
    max_image_pixels: int | None = None  # decoded frame/mask size limit (None: none; build_server derives one)
    token: str | None = None             # shared secret: `authorization: Bearer <token>` or x-s3rt-token
    tls_cert: bytes | None = None        # PEM server certificate chain + key: TLS instead of plaintext
    tls_key: bytes | None = None
    tls_client_ca: bytes | None = None   # PEM CA: require client certificates signed by it
    first_message_timeout_s: float = 5.0  # a Stream call silent this long after it starts is cancelled
    max_opening: int | None = None       # Stream calls still waiting for their first message (default max_streams)

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise ConfigError("the token is empty: give a non-empty secret (or no token for an open server)")
        if not 0 < self.first_message_timeout_s < math.inf:
            raise ConfigError(f"first_message_timeout_s must be a positive number of seconds, got "
                              f"{self.first_message_timeout_s}")

    @property
    def max_message_bytes(self) -> int:
        return 2 * self.max_frame_bytes + (1 << 20)


class SegmentationService:
    """The servicer of s3rt.serving.v1.SegmentationService (routed by stubs.add_servicer)."""

    def __init__(self, manager: SessionManager, config: ServerConfig, metrics: ServerMetrics, info: dict) -> None:
        self.manager = manager
        self.config = config
        self.metrics = metrics
        self.info = info
        limit = manager.limits.max_streams + (config.max_opening or manager.limits.max_streams)
        self.stream_call_limit = limit
        self._stream_calls = threading.BoundedSemaphore(limit)

    # -- auth ---------------------------------------------------------------------------------------
    def _authorised(self, context: Any) -> bool:
        if self.config.token is None:
            return True
        meta = dict(context.invocation_metadata() or ())
        sent = meta.get(TOKEN_KEY, "")
        bearer = meta.get("authorization", "")
        if bearer[:7].lower() == "bearer ":
            sent = bearer[7:].strip()
        return hmac.compare_digest(sent.encode(), self.config.token.encode())

    def _refuse_unauthorised(self, context: Any) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      f"missing or wrong token: send metadata 'authorization: Bearer <token>' (or '{TOKEN_KEY}')")

    # -- unary --------------------------------------------------------------------------------------
    def Info(self, request: Any, context: Any) -> Any:
        if not self._authorised(context):
            self._refuse_unauthorised(context)
        lim = self.manager.limits
        d = self.manager.defaults
        return pb.InfoResponse(s3rt_version=__version__, model=self.info.get("model", ""),
                            backend=self.info.get("backend", ""), height=self.info.get("height", 0),
                            width=self.info.get("width", 0), max_streams=lim.max_streams,
                            max_objects_per_stream=lim.max_objects, max_buckets=self.info.get("max_buckets", 0),
                            deadline_ms=d.deadline_ms if d.deadline_ms is not None else -1,
                            idle_timeout_s=lim.idle_timeout_s or 0, max_frame_bytes=self.config.max_frame_bytes,
                            max_message_bytes=self.config.max_message_bytes,
                            active_streams=self.manager.stats()["streams"],
                            encodings=list(codec.FRAME_ENCODINGS))

    # -- the stream ---------------------------------------------------------------------------------
    def Stream(self, request_iterator: Any, context: Any) -> Any:
        if not self._authorised(context):
            self.metrics.refused("auth")
            self._refuse_unauthorised(context)
        if not self._stream_calls.acquire(blocking=False):
            self.metrics.refused("max_streams")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.stream_call_limit} stream calls are open or opening, the server's limit; "
                          "close one or retry later")
        try:
            yield from self._stream(request_iterator, context)
        finally:
            self._stream_calls.release()

    def _first_request(self, request_iterator: Any, context: Any) -> Any:
        """The call's first message, or None when it does not come within the first-message timeout."""
        timeout = self.config.first_message_timeout_s
        timer = threading.Timer(timeout, context.cancel)
        timer.daemon = True
        timer.start()
        try:
            return next(request_iterator, None)
        except grpc.RpcError:
            return None
        finally:
            timer.cancel()

    def _stream(self, request_iterator: Any, context: Any) -> Any:
        first = self._first_request(request_iterator, context)
        if first is None:
            self.metrics.refused("no_first_message")
            log.info("stream call ended before its first message", extra={"event": "no_first_message"})
            return
        opening = first.open if first.WhichOneof("kind") == "open" else pb.OpenStream()
        try:
            options = self._options(opening)
            name = self._name(opening.name)
        except ConfigError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            session = self.manager.open(options, name=name)
        except CapacityError as exc:
            self.metrics.refused("max_streams")
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except StateError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        try:
            if not context.add_callback(lambda: self.manager.close(session.stream_id, "client disconnected")):
                return                                  # the call ended while the stream was opening
            # gRPC's sync server completes a send once it is queued in its transport, not when the
            # client took it, so results a client leaves unread also wait there; label images (runs
            # of a few values) shrink 100x and more with gzip, which every gRPC client decodes.
            context.set_compression(grpc.Compression.Gzip)
            d = session.options
            yield pb.StreamResponse(opened=pb.Opened(stream_id=session.stream_id,
                                                     deadline_ms=d.deadline_ms if d.deadline_ms is not None else -1,
                                                     every_frame=not d.latest_frame_wins,
                                                     max_objects=session.objects.max_objects))
            if first.WhichOneof("kind") != "open":
                self._feed(session, first)
            reader = threading.Thread(target=self._read, args=(session, request_iterator),
                                      name=f"s3rt-read-{session.stream_id}", daemon=True)
            reader.start()
            for out in session:
                yield codec.output_to_pb(out)
            reason = session.closed_reason or ""
            self.manager.close(session.stream_id)
            if self.manager.shutting_down:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"stream {session.stream_id} closed: {reason}")
            if reason.startswith("idle"):
                context.abort(grpc.StatusCode.ABORTED, f"stream {session.stream_id} closed: {reason}")
            if reason.startswith("the client stopped reading"):
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"stream {session.stream_id} closed: {reason}")
        finally:                                        # every way out frees the slot
            self.manager.close(session.stream_id, "stream call ended")

    @staticmethod
    def _name(name: str) -> str | None:
        if len(name) > MAX_NAME or not name.isprintable():
            raise ConfigError(f"stream names are at most {MAX_NAME} printable characters, got {len(name)} "
                              "characters" + ("" if name.isprintable() else " with control characters"))
        return name or None

    def _options(self, m: Any) -> StreamOptions:
        d = self.manager.defaults
        if math.isnan(m.deadline_ms) or math.isinf(m.deadline_ms):
            raise ConfigError(f"deadline_ms must be a finite number (0: server default, < 0: none), got {m.deadline_ms}")
        if m.every_frame:
            return StreamOptions.every_frame(max_objects=m.max_objects or None)
        deadline = d.deadline_ms if m.deadline_ms == 0 else (None if m.deadline_ms < 0 else m.deadline_ms)
        return StreamOptions(deadline_ms=deadline, deadline_from="capture" if m.deadline_from_capture else "receive",
                             latest_frame_wins=True, max_waiting=d.max_waiting, max_objects=m.max_objects or None)

    def _read(self, session: StreamSession, requests: Any) -> None:
        """Requests -> session, in order; the end of the requests (or a broken call) closes the stream."""
        reason = "client finished"
        try:
            for req in requests:
                if session.closed:
                    break
                self._feed(session, req)
            session.drain()
        except grpc.RpcError:
            reason = "client disconnected"
        except Exception:  # noqa: BLE001 - never let a stream take the server down
            log.exception("stream %s: reader failed", session.stream_id)
            reason = "server error while reading the stream"
        session.close(session.closed_reason or reason)

    def _feed(self, session: StreamSession, req: Any) -> None:
        kind = req.WhichOneof("kind")
        try:
            if kind == "frame":
                self.metrics.frame_received()
                frame = self._frame(req.frame)
                if isinstance(frame, FrameFailed):
                    session.report(frame)
                    return
                session.submit(frame, req.frame.seq, req.frame.capture_ts or None)
            elif kind in ("add", "update"):
                m = getattr(req, kind)
                self.metrics.frame_received()
                try:
                    frame = self._frame(m.frame, strict=True)
                    mask = self._mask(m.mask)
                    ids = {int(o.value): codec.object_id_from_pb(o.id) for o in m.objects} or None
                except S3rtError as exc:
                    self._control_error(session, kind, m.request_id, exc, with_frame=True)
                    return
                control = AddObjects(mask, ids) if kind == "add" else UpdateObjects(mask, ids)
                session.control(control, frame=frame, seq=m.frame.seq, capture_ts=m.frame.capture_ts or None,
                                request_id=m.request_id or None)
            elif kind == "remove":
                try:
                    if len(req.remove.ids) > session.objects.max_objects:
                        raise CapacityError(f"remove names {len(req.remove.ids)} ids but this stream tracks at "
                                            f"most {session.objects.max_objects}")
                    ids = tuple(codec.object_id_from_pb(i) for i in req.remove.ids)
                except S3rtError as exc:
                    self._control_error(session, "remove", req.remove.request_id, exc)
                    return
                session.control(RemoveObjects(ids), request_id=req.remove.request_id or None)
            elif kind == "reset":
                session.control(Reset(), request_id=req.reset.request_id or None)
            elif kind == "open":
                self._control_error(session, "open", 0, StateError("the stream is already open; "
                                                                   "'open' must be the first message"))
        except S3rtError as exc:        # e.g. closed stream: say so in the stream, keep the server up
            if not session.closed:
                self._control_error(session, kind or "unknown", 0, exc)

    def _frame(self, m: Any, *, strict: bool = False) -> Any:
        """Decode, or a FrameFailed for this frame (strict: raise instead)."""
        try:
            self._check_bytes("frame", m.image)
            return codec.decode_frame(m.image, max_pixels=self.config.max_image_pixels)
        except S3rtError as exc:
            if strict:
                raise
            return FrameFailed(seq=int(m.seq), capture_ts=m.capture_ts, error=type(exc).__name__, message=str(exc))

    def _mask(self, image: Any) -> Any:
        self._check_bytes("mask", image)
        return codec.decode_mask(image, max_pixels=self.config.max_image_pixels)

    def _check_bytes(self, what: str, image: Any) -> None:
        size = image.ByteSize()         # the message's size; reading .data would copy the bytes
        if size > self.config.max_frame_bytes:
            raise InputError(f"{what} of {size} bytes exceeds the server's limit of "
                             f"{self.config.max_frame_bytes} bytes (--max-frame-mb)")

    def _control_error(self, session: StreamSession, op: str, request_id: int, exc: Exception, *,
                       with_frame: bool = False) -> None:
        session.report(ControlReply(op=op, request_id=request_id or None, ok=False, error=type(exc).__name__,
                                    message=str(exc), labels=session.objects.labels), with_frame=with_frame)


class Server:
    """A running gRPC server (start() / stop()); `port` is the bound port."""

    def __init__(self, manager: SessionManager, config: ServerConfig | None = None, *,
                 info: dict | None = None, metrics: ServerMetrics | None = None) -> None:
        self.manager = manager
        self.config = config or ServerConfig()
        self.metrics = metrics or ServerMetrics(manager)
        self.info = info or {}
        opts = [("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.max_message_bytes),
                ("grpc.so_reuseport", 0)]
        self.service = SegmentationService(manager, self.config, self.metrics, self.info)
        # Stream handlers hold a thread each for their whole call, and at most stream_call_limit
        # of them run (the rest are refused at once), so UNARY_RESERVE threads stay for the rest.
        workers = self.service.stream_call_limit + UNARY_RESERVE
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3rt-grpc"),
                                 options=opts, maximum_concurrent_rpcs=8 * workers)
        pb_grpc.add_servicer(self.service, self._grpc)
        self._health = self._add_health()
        self._add_reflection()
        address = f"{self.config.host}:{self.config.port}"
        try:
            if self.config.tls_cert is not None:
                creds = grpc.ssl_server_credentials([(self.config.tls_key, self.config.tls_cert)],
                                                    root_certificates=self.config.tls_client_ca,
                                                    require_client_auth=self.config.tls_client_ca is not None)
                self.port = self._grpc.add_secure_port(address, creds)
            else:
                self.port = self._grpc.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            tls = " (or the TLS certificate and key are unusable)" if self.config.tls_cert is not None else ""
            raise StateError(f"cannot bind {address}: the port is in use or not allowed{tls}")

    def _add_health(self) -> Any:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, self._grpc)
        self._health_pb2 = health_pb2
        return servicer

    def _add_reflection(self) -> None:
        """gRPC server reflection (grpcurl, grpcui, Postman discover the API without the .proto)."""
        from grpc_health.v1 import health_pb2
        try:
            from grpc_reflection.v1alpha import reflection
        except ImportError:
            log.warning("grpcio-reflection is not installed: server reflection is off (pip install 's3rt[serve]')")
            return
        names = (pb_grpc.SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self._grpc)

    def _set_health(self, serving: bool) -> None:
        status = self._health_pb2.HealthCheckResponse.SERVING if serving else \
            self._health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", pb_grpc.SERVICE_NAME):
            self._health.set(name, status)

    def start(self) -> "Server":
        self._grpc.start()
        self.manager.start_reaper()
        self._set_health(True)
        log.info("serving", extra={"event": "start", "address": f"{self.config.host}:{self.port}",
                                   "max_streams": self.manager.limits.max_streams})
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        """Refuse new streams, end open ones with UNAVAILABLE, then stop gRPC."""
        self._set_health(False)
        self.manager.shutdown("server shutting down")
        time.sleep(0.05)                 # let handlers send their final status
        self._grpc.stop(grace_s).wait(grace_s + 1)
        log.info("stopped", extra={"event": "stop"})

    def wait(self) -> None:
        self._grpc.wait_for_termination()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_server(backend: Any, *, limits: ServingLimits | None = None, defaults: StreamOptions | None = None,
                 config: ServerConfig | None = None, max_short_side: int | None = None) -> Server:
    """A server over an (unopened or opened) backend; each stream gets a tracker of its own."""
    from s3rt.runtime.serving import tracker_factory
    factory = tracker_factory(backend, max_short_side=max_short_side)
    metrics_holder: list[ServerMetrics] = []
    manager = SessionManager(factory, limits, defaults=defaults,
                             thread_safe=getattr(backend, "thread_safe", False),
                             on_output=lambda s, o: metrics_holder[0].observe(s, o) if metrics_holder else None)
    metrics = ServerMetrics(manager, model=backend.model_config.name, backend=getattr(backend, "name", ""))
    metrics_holder.append(metrics)
    fixed = getattr(backend, "fixed_size", None)
    cap = getattr(backend, "capacity", None)
    config = config or ServerConfig()
    if config.max_image_pixels is None:
        config = replace(config, max_image_pixels=default_max_image_pixels(fixed))
    info = {"model": backend.model_config.name, "backend": getattr(backend, "name", ""),
            "height": fixed[0] if fixed else 0, "width": fixed[1] if fixed else 0,
            "max_buckets": cap.max_buckets if cap else 0}
    return Server(manager, config, info=info, metrics=metrics)


def default_max_image_pixels(fixed_size: tuple[int, int] | None) -> int:
    """Decoded-image limit: 16x the export's pixels, at least 4K UHD (3840x2160); frames are resized
    to the export size anyway, so anything far larger only costs memory."""
    floor = 3840 * 2160
    return max(floor, 16 * fixed_size[0] * fixed_size[1]) if fixed_size else floor


def return_freed_memory_promptly(mmap_threshold: int = 1 << 20, arenas: int = 2) -> bool:
    """Make glibc give large freed buffers back to the system at once (a server process setting).

    A stream of multi-MB frames is received, copied and freed by several threads; by default glibc
    raises its mmap threshold after the first such free and keeps the memory in per-thread arenas,
    so RSS climbs by hundreds of MB that are free but never returned. A fixed threshold (buffers
    above it are mmapped and unmapped) and few arenas keep RSS near what is really in use.
    Returns False where this is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_mmap_threshold, m_arena_max = -3, -8
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(mallopt(m_arena_max, arenas))
