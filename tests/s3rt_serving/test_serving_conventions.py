"""Issue 22, conventions: gRPC (the .proto passes `buf lint` STANDARD at a path matching its package,
server reflection, `authorization: Bearer`) and Prometheus (process metrics, build info, every
labelled series at 0 from the start, an exposition that parses and passes `promtool check metrics`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("grpc", reason="serving tests need the serve extra (grpcio)")

import grpc  # noqa: E402

from s3rt.runtime.serving import DropReason, ServingLimits, StreamOptions  # noqa: E402
from s3rt.runtime.serving.grpc.stubs import PROTO, PROTO_NAME, PROTO_ROOT, SERVICE_NAME, load  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUF_PIN = "@bufbuild/buf@1.75.0"


@pytest.fixture(scope="module")
def server(backend):
    from s3rt.runtime.serving.grpc.server import ServerConfig, build_server
    srv = build_server(backend, limits=ServingLimits(max_streams=2, max_objects=4, idle_timeout_s=None),
                       defaults=StreamOptions(deadline_ms=500), config=ServerConfig(port=0, token="s3cret")).start()
    yield srv
    srv.stop()


def _buf() -> str:
    """buf from PATH, from `make test`'s install (.ci/node), or installed there now with npm."""
    found = shutil.which("buf") or (REPO / ".ci/node/node_modules/.bin/buf")
    if Path(found).is_file():
        return str(found)
    if shutil.which("npm") is None:
        pytest.skip("buf is not installed and npm is absent: cannot lint the .proto (npm install @bufbuild/buf)")
    subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(REPO / ".ci/node"),
                    BUF_PIN], check=True, timeout=600, capture_output=True)
    return str(REPO / ".ci/node/node_modules/.bin/buf")


def test_proto_sits_at_its_package_path_and_passes_buf_lint_standard():
    assert PROTO == PROTO_ROOT / "s3rt/serving/v1/serving.proto" and PROTO_NAME == "s3rt/serving/v1/serving.proto"
    text = PROTO.read_text()
    assert "package s3rt.serving.v1;" in text
    for option in ("go_package", "java_package", "csharp_namespace"):
        assert f"option {option} = " in text
    out = subprocess.run([_buf(), "lint"], cwd=PROTO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "STANDARD" in (PROTO_ROOT / "buf.yaml").read_text()


def test_go_client_code_generates_from_the_proto(tmp_path):
    """Where protoc and the Go plugins are installed (Debian: protobuf-compiler, protoc-gen-go,
    protoc-gen-go-grpc), the Go message and client code generates into the go_package's folder."""
    tools = [shutil.which(t) for t in ("protoc", "protoc-gen-go", "protoc-gen-go-grpc")]
    if None in tools:
        pytest.skip("protoc / protoc-gen-go / protoc-gen-go-grpc not installed: Go generation not checked")
    out = subprocess.run([tools[0], f"-I{PROTO_ROOT}", f"--go_out={tmp_path}", "--go_opt=paths=source_relative",
                          f"--go-grpc_out={tmp_path}", "--go-grpc_opt=paths=source_relative", PROTO_NAME],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    client = (tmp_path / "s3rt/serving/v1/serving_grpc.pb.go").read_text()
    assert "package servingv1" in client and "func NewSegmentationServiceClient" in client
    assert "func (x *StreamRequest) GetFrame() *Frame" in (tmp_path / "s3rt/serving/v1/serving.pb.go").read_text()


def test_reflection_lists_and_describes_the_service(server):
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in described.file_descriptor_response.file_descriptor_proto]
    ours = next(f for f in files if f.name == PROTO_NAME)
    assert [m.name for m in ours.service[0].method] == ["Stream", "Info"]


def test_bearer_token_is_accepted_beside_the_s3rt_header(server):
    pb, pb_grpc = load()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        assert stub.Info(pb.InfoRequest(), metadata=(("authorization", "Bearer s3cret"),), timeout=10).model == "tiny"
        assert stub.Info(pb.InfoRequest(), metadata=(("x-s3rt-token", "s3cret"),), timeout=10).model == "tiny"
        for meta in ((("authorization", "Bearer wrong"),), (("authorization", "s3cret"),), ()):
            with pytest.raises(grpc.RpcError) as err:
                stub.Info(pb.InfoRequest(), metadata=meta, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in err.value.details()


def test_metrics_follow_prometheus_conventions(server, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    text = server.metrics.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    (build,) = families["s3rt_build_info"].samples
    assert build.value == 1 and build.labels["model"] == "tiny" and build.labels["backend"] == "onnxruntime"
    assert build.labels["version"]

    def labels(family: str, key: str) -> set[str]:
        return {s.labels[key] for s in families[family].samples if s.name.endswith("_total")}

    assert labels("s3rt_frames_dropped", "reason") == {r.value for r in DropReason}
    assert {"InputError", "ShapeError", "ObjectIdError", "CapacityError"} <= labels("s3rt_frame_errors", "error")
    assert {(s.labels["op"], s.labels["outcome"]) for s in families["s3rt_controls"].samples
            if s.name.endswith("_total")} == {(op, o) for op in ("add", "update", "remove", "reset")
                                              for o in ("ok", "error")}
    assert labels("s3rt_streams_refused", "reason") == {"max_streams", "auth", "no_first_message"}
    for family in families.values():                   # base units and the counter suffix
        if family.name.startswith("s3rt_"):
            assert family.type != "counter" or all(s.name.endswith(("_total", "_created")) for s in family.samples)
            assert not family.name.endswith(("_ms", "_milliseconds", "_mb"))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus); the parser check above ran")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
