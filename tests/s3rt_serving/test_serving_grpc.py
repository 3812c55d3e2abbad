"""Faults and load against a real gRPC server on loopback (tiny model, 64x96 frames, CPU)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("grpc", reason="serving tests need the serve extra (grpcio)")

from s3rt_serving.serving_helpers import H, W, SlowBackend, make_clip  # noqa: E402
from s3rt.errors import ObjectIdError, ShapeError, StreamClosedError  # noqa: E402
from s3rt.runtime.serving import Dropped, DropReason, FrameFailed, Result, ServingLimits, StreamOptions  # noqa: E402
from s3rt.runtime.tracker import Tracker  # noqa: E402

FRAME_BYTES = H * W * 3


def start(backend, **kw):
    from s3rt.runtime.serving.grpc.server import ServerConfig, build_server
    limits = kw.pop("limits", ServingLimits(max_streams=4, max_objects=4, idle_timeout_s=None))
    defaults = kw.pop("defaults", StreamOptions(deadline_ms=500))
    return build_server(backend, limits=limits, defaults=defaults,
                        config=ServerConfig(port=0, max_frame_bytes=2 * FRAME_BYTES, **kw)).start()


@pytest.fixture(scope="module")
def server(backend):
    srv = start(backend)
    yield srv
    srv.stop()


def client(srv, **kw):
    from s3rt.runtime.serving.grpc.client import Client
    return Client(f"127.0.0.1:{srv.port}", **kw)


def test_bad_frames_get_an_error_each_and_the_stream_goes_on(server):
    from s3rt.runtime.serving.grpc import codec
    pb = codec.pb
    frames, mask = make_clip(3)
    with client(server) as c, c.stream(every_frame=True) as s:
        s.add_objects(mask, frames[0], seq=0)
        s.send_image(pb.Image(data=b"\xff\xd8not a jpeg", encoding=pb.ENCODING_JPEG), seq=1)
        s.send_image(pb.Image(data=frames[1].tobytes()[:-5], height=H, width=W, encoding=pb.ENCODING_RGB8), seq=2)
        s.send_image(pb.Image(data=frames[1].tobytes(), height=H, width=W, encoding=pb.ENCODING_MONO16), seq=3)
        s.send_image(pb.Image(data=frames[1].tobytes(), height=H, width=W, encoding=99), seq=4)
        big = np.zeros((200, 200, 3), np.uint8)
        s.send_image(pb.Image(data=big.tobytes(), height=200, width=200, encoding=pb.ENCODING_RGB8), seq=5)
        s.send(np.zeros((32, 32, 3), np.uint8), seq=6)                       # another size than the stream's
        s.send(np.ascontiguousarray(frames[1][..., ::-1]), seq=7)            # fine, as bgr8 below
        s.encoding = "bgr8"
        s.send(frames[2], seq=8)
        s.encoding = "png"
        s.send(frames[2], seq=9)
        outs = [o for o in [s.next_output(30) for _ in range(10)] if o is not None]
        errors = {o.seq: o for o in outs if isinstance(o, FrameFailed)}
        assert set(errors) == {1, 2, 3, 4, 5, 6}
        assert errors[1].error == "InputError" and "cannot decode" in errors[1].message
        assert errors[2].error == "ShapeError" and f"needs {FRAME_BYTES} bytes" in errors[2].message
        assert "not a frame encoding" in errors[3].message and "unknown(99)" in errors[4].message
        assert "exceeds the server's limit" in errors[5].message
        assert "this stream's frames are 64x96" in errors[6].message
        done = [o for o in outs if isinstance(o, Result)]
        assert [o.seq for o in done] == [0, 7, 8, 9]
        assert c.info().model == "tiny" and c.health() == "SERVING"


def test_control_errors_leave_the_stream_unchanged(server):
    frames, mask = make_clip(3)
    with client(server) as c, c.stream(every_frame=True) as s:
        assert s.add_objects(mask, frames[0], ids={1: "a", 2: 9}).labels == {"a": 1, 9: 2}
        cases = [(ObjectIdError, "already tracked", lambda: s.add_objects(mask, frames[1], ids={1: "a", 2: "b"})),
                 (ObjectIdError, "unknown object ids", lambda: s.remove_objects(["zz"])),
                 (ObjectIdError, "empty mask", lambda: s.add_objects(np.where(mask == 1, 1, 0), frames[1],
                                                                     ids={1: "x", 2: "y"})),
                 (ShapeError, "but its frame is", lambda: s.add_objects(mask[:20], frames[1], ids={1: "x", 2: "y"}))]
        for err, text, call in cases:
            with pytest.raises(err, match=text):
                call()
        r = s.process(frames[1], seq=5)
        assert isinstance(r, Result) and r.label_map == {"a": 1, 9: 2}
        assert s.remove_objects([9]).labels == {"a": 1}


def test_load_4_streams_x_300_frames_in_order_and_equal_to_offline(server, backend):
    clips = [make_clip(300, seed=k) for k in range(2)]
    offline = []
    for frames, mask in clips:
        t = Tracker(backend, max_short_side=None)
        offline.append([t.step(frames[0], mask=mask).index_mask] + [t.step(f).index_mask for f in frames[1:]])
    results: dict[int, list] = {}
    sample = server.metrics.registry.get_sample_value

    def counts() -> tuple[float, float]:
        return sample("s3rt_frames_received_total"), sample("s3rt_frames_processed_total")

    before = counts()

    def run(k: int) -> None:
        frames, mask = clips[k % 2]
        with client(server) as c:
            s = c.stream(every_frame=True)
            s.add_objects(mask, frames[0], seq=0)          # its frame's result is the first output
            for i in range(1, 300):
                s.send(frames[i], seq=i)
            s.close()
            outs = list(s.outputs())
            results[k] = outs

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(600)
    for k in range(4):
        outs = results[k]
        assert [o.seq for o in outs] == list(range(300))                   # none lost, duplicated or reordered
        assert all(isinstance(o, Result) for o in outs)
        for o, want in zip(outs, offline[k % 2]):
            np.testing.assert_array_equal(o.labels, want)
    deadline = time.monotonic() + 10
    while server.manager.stats()["streams"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.manager.stats() == {"streams": 0, "objects": 0, "state_bytes": 0}
    received, processed = (a - b for a, b in zip(counts(), before))
    assert received == processed == 4 * 300                               # received = processed + 0 dropped


def test_disconnect_frees_state_and_spares_other_streams(server):
    frames, mask = make_clip(4)
    with client(server) as c:
        a, b = c.stream(every_frame=True), c.stream(every_frame=True)
        a.add_objects(mask, frames[0])
        b.add_objects(mask, frames[0])
        one = server.manager.get(b.stream_id).state_bytes
        assert server.manager.stats()["state_bytes"] == 2 * one > 0
        a.cancel()                                                 # abrupt disconnect
        deadline = time.monotonic() + 10
        while server.manager.stats()["streams"] > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.manager.stats()["streams"] == 1 and server.manager.stats()["state_bytes"] == one
        assert isinstance(b.process(frames[1], seq=1), Result)
        b.close()


def test_limits_and_token(backend):
    srv = start(backend, limits=ServingLimits(max_streams=1, max_objects=2, idle_timeout_s=None), token="s3cret")
    from s3rt.runtime.serving.grpc.client import ServerError
    try:
        with pytest.raises(ServerError, match="UNAUTHENTICATED"):
            client(srv).stream()
        with pytest.raises(ServerError, match="UNAUTHENTICATED"):
            client(srv, token="wrong").info()
        with client(srv, token="s3cret") as c:
            s = c.stream()
            with pytest.raises(ServerError, match="RESOURCE_EXHAUSTED.*limit is 1"):
                c.stream()
            assert c.info().max_streams == 1 and s.opened.max_objects == 2
            import urllib.request
            httpd = srv.metrics.serve_http(0)
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_port}/metrics", timeout=10).read().decode()
            finally:
                httpd.shutdown()
            assert "s3rt_active_streams 1.0" in text and 's3rt_streams_refused_total{reason="max_streams"} 1.0' in text
            assert 's3rt_streams_refused_total{reason="auth"} 1.0' in text
            s.close()
    finally:
        srv.stop()


def test_idle_timeout_frees_state_and_then_ops_fail(backend):
    srv = start(backend, limits=ServingLimits(max_streams=2, max_objects=4, idle_timeout_s=0.4))
    frames, mask = make_clip(2)
    try:
        with client(srv) as c:
            s = c.stream()
            s.add_objects(mask, frames[0])
            assert srv.manager.stats()["state_bytes"] > 0
            assert s.next_output(10) is not None                 # the add's result
            assert s.next_output(10) is None                     # the stream ends after ~0.4 s idle
            assert s.error.code == "ABORTED" and "idle" in s.error.details
            assert srv.manager.stats() == {"streams": 0, "objects": 0, "state_bytes": 0}
            with pytest.raises(StreamClosedError):
                s.add_objects(mask, frames[1])
    finally:
        srv.stop()


def test_shutdown_ends_open_streams_with_unavailable(backend):
    srv = start(backend)
    frames, mask = make_clip(2)
    with client(srv) as c:
        s = c.stream()
        s.add_objects(mask, frames[0])
        srv.stop()
        while s.next_output(10) is not None:
            pass
        assert s.error is not None and s.error.code == "UNAVAILABLE" and "shutting down" in s.error.details


def test_slow_backend_drops_instead_of_queueing(backend):
    """Each frame takes ~6 x 15 ms; frames sent at ~100 FPS: latency stays bounded by the deadline."""
    srv = start(SlowBackend(backend, 0.015), defaults=StreamOptions(deadline_ms=80))
    frames, mask = make_clip(60)
    try:
        with client(srv) as c, c.stream() as s:
            s.add_objects(mask, frames[0], seq=0)
            for i in range(1, 60):
                s.send(frames[i], seq=i)
                time.sleep(0.01)
            s.close()
            outs = list(s.outputs())
        assert sorted(o.seq for o in outs) == list(range(60))
        done = [o for o in outs if isinstance(o, Result)][1:]
        drops = [o for o in outs if isinstance(o, Dropped)]
        assert len(drops) > len(done) > 3
        assert {d.reason for d in drops} <= {DropReason.SUPERSEDED, DropReason.DEADLINE}
        for reason in DropReason:
            got = srv.metrics.registry.get_sample_value("s3rt_frames_dropped_total", {"reason": reason.value}) or 0
            assert got == sum(d.reason is reason for d in drops)
        assert max(o.timing.queue_ms for o in done) <= 80              # never processed late
        infer = max(o.timing.inference_ms for o in done)
        assert max(o.timing.total_ms for o in done) <= 80 + infer + 20
    finally:
        srv.stop()


def test_server_and_client_import_without_torch_and_run_no_planted_stub(tmp_path):
    """Issue 22 #7: with no writable home the stubs used to be generated into, and imported from, a
    predictable $TMPDIR/s3rt-proto/<key>; a file planted there ran inside the server. Now no Python
    code is generated or imported at all (message classes come from the .proto's descriptor)."""
    import hashlib
    import os
    import subprocess
    import sys
    from importlib.metadata import version
    from s3rt.runtime.serving.grpc.stubs import PROTO
    marker = tmp_path / "planted-code-ran"
    key = hashlib.sha256(PROTO.read_bytes() + version("grpcio-tools").encode()).hexdigest()[:16]
    tmp = tmp_path / "tmp"
    for folder in (tmp / "s3rt-proto" / key, tmp / "s3rt-proto"):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("s3rt_serving_pb2.py", "s3rt_serving_pb2_grpc.py", "serving_pb2.py", "serving_pb2_grpc.py"):
            (folder / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    code = ("import sys\nsys.modules['torch'] = None\n"
            "import s3rt.runtime.serving.grpc.server, s3rt.runtime.serving.grpc.client, s3rt.cli.serve, s3rt.cli.stream\n"
            "from s3rt.runtime.serving.grpc.stubs import load\npb, _ = load()\n"
            "print(pb.StreamRequest(open=pb.OpenStream(name='x')).open.name)\n")
    env = {**os.environ, "HOME": "/nonexistent", "TMPDIR": str(tmp), "S3RT_PROTO_CACHE": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "x", out.stderr
    assert not marker.exists()
    left = [p for p in tmp.rglob("*") if p.is_file() and "s3rt-proto" not in p.parts]
    assert left == []                                  # nothing written (the descriptor's temp folder is gone)


def test_message_beyond_the_transport_limit_ends_only_that_stream(server):
    """Above max_frame_bytes a frame gets a FrameError (tested above); above gRPC's own limit
    (2 x max_frame_bytes + 1 MiB) gRPC ends that one call: the server and other streams go on."""
    from s3rt.runtime.serving.grpc import codec
    frames, mask = make_clip(2)
    with client(server) as c:
        other = c.stream(every_frame=True)
        other.add_objects(mask, frames[0])
        s = c.stream(every_frame=True)
        huge = 2 * server.service.config.max_message_bytes
        s.send_image(codec.pb.Image(data=bytes(huge), height=1, width=huge, encoding=codec.pb.ENCODING_MONO8), seq=1)
        assert s.next_output(20) is None and s.error.code == "RESOURCE_EXHAUSTED"
        assert isinstance(other.process(frames[1], seq=1), Result)
        assert c.health() == "SERVING"
        other.close()


def test_tls_and_json_logs(backend, tmp_path):
    import json
    import logging
    import shutil
    import subprocess
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: cannot make a test certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    srv = start(backend, tls_cert=cert.read_bytes(), tls_key=key.read_bytes())
    from s3rt.cli.serve import JsonFormatter
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(JsonFormatter().format(r))
    logging.getLogger("s3rt").addHandler(handler)
    logging.getLogger("s3rt").setLevel(logging.INFO)
    try:
        from s3rt.runtime.serving.grpc.client import Client, ServerError
        frames, mask = make_clip(2)
        with Client(f"localhost:{srv.port}", tls_ca=cert.read_bytes()) as c:
            with c.stream(every_frame=True) as s:
                s.add_objects(mask, frames[0])
                assert isinstance(s.process(frames[1], seq=1), Result)
        with client(srv) as plain, pytest.raises(ServerError, match="UNAVAILABLE"):
            plain.timeout_s = 3                             # a plaintext client cannot talk to a TLS server
            plain.info()
    finally:
        srv.stop()
        logging.getLogger("s3rt").removeHandler(handler)
    events = [json.loads(r) for r in records]
    opened = [e for e in events if e.get("event") == "open"]
    closed = [e for e in events if e.get("event") == "close"]
    assert opened and closed and opened[0]["stream"] == closed[0]["stream"] and "reason" in closed[0]
