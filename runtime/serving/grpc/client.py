"""A small Python client for `s3rt serve`: blocking calls or an iterator over a stream's outputs.

    with Client("127.0.0.1:50051") as c:
        print(c.info().model, c.health())
        with c.stream(deadline_ms=150) as s:                 # or every_frame=True for replay
            reply = s.add_objects(mask, frame0, ids={1: "cup"})   # blocks; reply.labels == {"cup": 1}
            s.send(frame, seq=1)                             # non-blocking
            for out in s.outputs(timeout=1.0):               # Result | Dropped | FrameFailed
                ...
            r = s.process(frame, seq=2)                      # send + wait for that frame's output

Outputs are the serving core's dataclasses (s3rt.runtime.serving.messages), rebuilt from the wire.
Control replies resolve the call that sent them; outputs() yields frame outputs only (the result of
an add/update frame included).
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from s3rt.errors import S3rtError, StateError, StreamClosedError
from s3rt.runtime.serving.messages import ControlReply, ObjectId, Output
from s3rt.runtime.serving.outbox import Outbox
from s3rt.runtime.serving.grpc import codec
from s3rt.runtime.serving.grpc.stubs import load

pb, pb_grpc = load()
import grpc  # noqa: E402

_END = object()


class ServerError(S3rtError):
    """The server ended a stream or refused a call: `code` is the gRPC status code name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def _control_error(reply: ControlReply) -> S3rtError:
    import s3rt.errors as errors
    cls = getattr(errors, reply.error, None)
    cls = cls if isinstance(cls, type) and issubclass(cls, S3rtError) else S3rtError
    return cls(reply.message)


class Client:
    """A channel to one server. `token` is sent as metadata; `tls_ca` (PEM) switches to TLS."""

    def __init__(self, target: str, *, token: str | None = None, tls_ca: bytes | None = None,
                 max_message_bytes: int = 128 << 20, timeout_s: float = 30.0) -> None:
        opts = [("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes)]
        self.channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(tls_ca), options=opts)
                        if tls_ca is not None else grpc.insecure_channel(target, options=opts))
        self.stub = pb_grpc.SegmentationServiceStub(self.channel)
        self.metadata = (("x-s3rt-token", token),) if token else ()
        self.timeout_s = timeout_s

    def info(self) -> Any:
        try:
            return self.stub.Info(pb.InfoRequest(), metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise ServerError(exc.code().name, exc.details()) from None

    def health(self, service: str = "") -> str:
        """SERVING / NOT_SERVING / ... from the standard gRPC health service."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise ServerError(exc.code().name, exc.details()) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def stream(self, *, deadline_ms: float | None = 0, every_frame: bool = False, max_objects: int = 0,
               deadline_from_capture: bool = False, name: str = "", encoding: str = "rgb8") -> "StreamClient":
        """Open a stream. deadline_ms: 0 = server default, None = no deadline."""
        opening = pb.OpenStream(deadline_ms=-1 if deadline_ms is None else deadline_ms, every_frame=every_frame,
                                max_objects=max_objects, deadline_from_capture=deadline_from_capture, name=name)
        return StreamClient(self, opening, encoding=encoding)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamClient:
    """One open stream. Thread-safe sends; one reader thread routes replies and outputs."""

    def __init__(self, client: Client, opening: Any, *, encoding: str = "rgb8") -> None:
        self.encoding = encoding
        self._requests: queue.Queue = queue.Queue()
        self._outputs: Outbox[Output] = Outbox()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(0)
        self._lock = threading.Lock()
        self.error: ServerError | None = None
        self.received_at: dict[int, float] = {}      # seq -> wall-clock time its output arrived (latency)
        self._requests.put(pb.StreamRequest(open=opening))
        self._call = client.stub.Stream(self._request_iter(), metadata=client.metadata)
        try:
            first = next(self._call)
        except grpc.RpcError as exc:
            raise ServerError(exc.code().name, exc.details()) from None
        self.opened = first.opened
        self.stream_id = first.opened.stream_id
        self._reader = threading.Thread(target=self._read, name=f"s3rt-client-{self.stream_id}", daemon=True)
        self._reader.start()

    # -- sending --------------------------------------------------------------------------------------
    def send(self, frame: np.ndarray, seq: int | None = None, capture_ts: float | None = None) -> int:
        """Send a frame; returns its seq (auto-numbered when None)."""
        seq = next(self._seq) if seq is None else seq
        self._put(pb.StreamRequest(frame=self._frame(frame, seq, capture_ts)))
        return seq

    def send_image(self, image: Any, seq: int, capture_ts: float | None = None) -> None:
        """Send a pre-built Image message as-is (tests of bad input; other encodings)."""
        self._put(pb.StreamRequest(frame=pb.Frame(seq=seq, capture_ts=capture_ts or time.time(), image=image)))

    def process(self, frame: np.ndarray, seq: int | None = None, timeout: float | None = 30.0) -> Output:
        """Send a frame and wait for its output (outputs of earlier frames are discarded)."""
        seq = self.send(frame, seq)
        while True:
            out = self.next_output(timeout)
            if out is None:
                raise StateError(f"no output for frame {seq} within {timeout} s" + (f" ({self.error})" if self.error else ""))
            if out.seq == seq:
                return out

    def add_objects(self, mask: np.ndarray, frame: np.ndarray, *, ids: Mapping[int, ObjectId] | None = None,
                    seq: int | None = None, capture_ts: float | None = None, wait: bool = True,
                    timeout: float | None = 60.0, raw_mask: Any = None) -> ControlReply | Future:
        """Add objects (mask values -> ids; None: values are the ids). Raises the server's typed error."""
        return self._mask_control("add", mask, frame, ids, seq, capture_ts, wait, timeout, raw_mask)

    def update_objects(self, mask: np.ndarray, frame: np.ndarray, *, ids: Mapping[int, ObjectId] | None = None,
                       seq: int | None = None, capture_ts: float | None = None, wait: bool = True,
                       timeout: float | None = 60.0) -> ControlReply | Future:
        return self._mask_control("update", mask, frame, ids, seq, capture_ts, wait, timeout, None)

    def remove_objects(self, ids: Sequence[ObjectId], *, wait: bool = True, timeout: float | None = 60.0) -> Any:
        rid, fut = self._register()
        self._put(pb.StreamRequest(remove=pb.RemoveObjects(request_id=rid, ids=[codec.object_id_to_pb(i) for i in ids])))
        return self._wait(fut, wait, timeout)

    def reset(self, *, wait: bool = True, timeout: float | None = 60.0) -> Any:
        rid, fut = self._register()
        self._put(pb.StreamRequest(reset=pb.Reset(request_id=rid)))
        return self._wait(fut, wait, timeout)

    # -- receiving ------------------------------------------------------------------------------------
    def next_output(self, timeout: float | None = None) -> Output | None:
        """The next frame output; None on timeout or once the stream ended (see .error)."""
        return self._outputs.get(timeout)

    def outputs(self, timeout: float | None = None) -> Iterator[Output]:
        """Frame outputs until the stream ends (or nothing arrives for `timeout` seconds)."""
        while True:
            out = self.next_output(timeout)
            if out is None:
                return
            yield out

    def close(self, timeout: float = 30.0) -> None:
        """Half-close: the server finishes the frames sent so far; their outputs stay readable."""
        self._requests.put(_END)
        self._reader.join(timeout)

    def cancel(self) -> None:
        """Drop the connection abruptly (what a crashed client does)."""
        self._call.cancel()
        self._reader.join(5)

    def __enter__(self) -> "StreamClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------------
    def _frame(self, frame: np.ndarray, seq: int, capture_ts: float | None) -> Any:
        return pb.Frame(seq=seq, capture_ts=time.time() if capture_ts is None else capture_ts,
                        image=codec.encode_frame(frame, self.encoding))

    def _mask_control(self, op: str, mask: np.ndarray, frame: np.ndarray, ids: Mapping[int, ObjectId] | None,
                      seq: int | None, capture_ts: float | None, wait: bool, timeout: float | None, raw_mask: Any) -> Any:
        rid, fut = self._register()
        seq = next(self._seq) if seq is None else seq
        objects = [pb.ObjectRef(id=codec.object_id_to_pb(i), value=v) for v, i in (ids or {}).items()]
        m = pb.MaskControl(request_id=rid, frame=self._frame(frame, seq, capture_ts),
                           mask=raw_mask if raw_mask is not None else codec.encode_mask(mask), objects=objects)
        self._put(pb.StreamRequest(**{op: m}))
        return self._wait(fut, wait, timeout)

    def _register(self) -> tuple[int, Future]:
        fut: Future = Future()
        with self._lock:
            rid = next(self._ids)
            self._pending[rid] = fut
        return rid, fut

    def _wait(self, fut: Future, wait: bool, timeout: float | None) -> Any:
        if not wait:
            return fut
        reply = fut.result(timeout)
        if not reply.ok:
            raise _control_error(reply)
        return reply

    def _put(self, req: Any) -> None:
        if self.error is not None:
            raise StreamClosedError(f"stream {self.stream_id} ended: {self.error}")
        self._requests.put(req)

    def _request_iter(self) -> Iterator[Any]:
        while True:
            req = self._requests.get()
            if req is _END:
                return
            yield req

    def _read(self) -> None:
        try:
            for msg in self._call:
                out = codec.output_from_pb(msg)
                if isinstance(out, ControlReply):
                    with self._lock:
                        fut = self._pending.pop(out.request_id or -1, None)
                    if fut is not None:
                        fut.set_result(out)
                    if out.result is not None:
                        self.received_at[out.result.seq] = time.time()
                        self._outputs.put(out.result)
                elif out is not None:
                    self.received_at[out.seq] = time.time()
                    self._outputs.put(out)
        except grpc.RpcError as exc:
            self.error = ServerError(exc.code().name, exc.details() or "")
        finally:
            with self._lock:
                pending, self._pending = self._pending, {}
            for fut in pending.values():
                fut.set_exception(StreamClosedError(f"stream ended before the reply: {self.error}"))
            self._outputs.end()
