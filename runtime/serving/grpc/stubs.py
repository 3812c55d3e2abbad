"""Message classes and service glue for `proto/s3rt/serving/v1/serving.proto`, built from its descriptor.

No generated Python code exists anywhere: at first use, grpc_tools' protoc (the `serve` extra)
compiles the shipped .proto to a FileDescriptorSet (data, written to a fresh private temporary
folder and read back), the descriptor is added to protobuf's default pool (so server reflection
serves it) and the message classes come from protobuf's message factory. The service's stub and
servicer registration are the few lines below. So nothing is ever imported from a folder another
user could write (a predictable `$TMPDIR/s3rt-proto/...` cache once let a planted file run inside
the server), and a changed .proto needs no regeneration step.

`pb` holds every message class and enum value by name (`pb.StreamRequest`, `pb.ENCODING_RGB8`);
`pb_grpc` holds `SegmentationServiceStub`, `add_servicer(servicer, server)` and `SERVICE_NAME`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from s3rt.errors import MissingDependencyError

PROTO_ROOT = Path(__file__).with_name("proto")
PROTO_NAME = "s3rt/serving/v1/serving.proto"          # path inside PROTO_ROOT = its package, as buf wants
PROTO = PROTO_ROOT / PROTO_NAME
SERVICE_NAME = "s3rt.serving.v1.SegmentationService"
_LOADED: tuple[SimpleNamespace, SimpleNamespace] | None = None


def descriptor_set() -> bytes:
    """The serialised FileDescriptorSet of the .proto, compiled now by grpc_tools' protoc."""
    from grpc_tools import protoc
    with tempfile.TemporaryDirectory(prefix="s3rt-proto-") as tmp:     # mode 0700, unpredictable name
        out = Path(tmp) / "serving.desc"
        rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}", PROTO_NAME])
        if rc != 0 or not out.is_file():
            raise MissingDependencyError(f"grpc_tools.protoc failed ({rc}) on {PROTO}")
        return out.read_bytes()


def _messages() -> SimpleNamespace:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(PROTO_NAME)
    except KeyError:
        (proto,) = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set()).file
        pool.AddSerializedFile(proto.SerializeToString())
        file = pool.FindFileByName(PROTO_NAME)
    pb = SimpleNamespace(DESCRIPTOR=file)
    for name, message in file.message_types_by_name.items():
        setattr(pb, name, message_factory.GetMessageClass(message))
    for enum in file.enum_types_by_name.values():
        for value in enum.values:
            setattr(pb, value.name, value.number)
    return pb


def _service(pb: SimpleNamespace) -> SimpleNamespace:
    import grpc

    methods = {"Stream": (pb.StreamRequest, pb.StreamResponse), "Info": (pb.InfoRequest, pb.InfoResponse)}

    class SegmentationServiceStub:
        """Client side: `Stream` (bidirectional) and `Info` (unary) callables on a channel."""

        def __init__(self, channel: Any) -> None:
            (req, resp), path = methods["Stream"], f"/{SERVICE_NAME}/Stream"
            self.Stream = channel.stream_stream(path, request_serializer=req.SerializeToString,
                                                response_deserializer=resp.FromString)
            (req, resp), path = methods["Info"], f"/{SERVICE_NAME}/Info"
            self.Info = channel.unary_unary(path, request_serializer=req.SerializeToString,
                                            response_deserializer=resp.FromString)

    def add_servicer(servicer: Any, server: Any) -> None:
        """Route the service's two methods to `servicer.Stream` / `servicer.Info`."""
        handlers = {
            "Stream": grpc.stream_stream_rpc_method_handler(
                servicer.Stream, request_deserializer=pb.StreamRequest.FromString,
                response_serializer=pb.StreamResponse.SerializeToString),
            "Info": grpc.unary_unary_rpc_method_handler(
                servicer.Info, request_deserializer=pb.InfoRequest.FromString,
                response_serializer=pb.InfoResponse.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))

    return SimpleNamespace(SegmentationServiceStub=SegmentationServiceStub, add_servicer=add_servicer,
                           SERVICE_NAME=SERVICE_NAME)


def load() -> tuple[SimpleNamespace, SimpleNamespace]:
    """(pb, pb_grpc): message classes and enum values, and the service glue."""
    global _LOADED
    if _LOADED is None:
        try:
            import grpc  # noqa: F401
            import grpc_tools  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(f"serving needs grpcio and grpcio-tools: pip install 's3rt[serve]' "
                                         f"({exc})") from exc
        pb = _messages()
        _LOADED = (pb, _service(pb))
    return _LOADED
