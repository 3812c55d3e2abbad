"""Issue 22: the ways one client (or an unlucky operator) took `s3rt serve` down, replayed against a
real server subprocess on loopback (tiny export at 64x96, no token, --idle-timeout 0). Each test
failed before its fix; loops are bounded and sizes small."""

from __future__ import annotations

import random
import struct
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("grpc", reason="serving tests need the serve extra (grpcio)")

import grpc  # noqa: E402

from conftest import start_server  # noqa: E402
from s3rt_serving.serving_helpers import make_clip  # noqa: E402
from s3rt.cli.main import main  # noqa: E402
from s3rt.errors import CapacityError  # noqa: E402
from s3rt.runtime.serving import FrameFailed, Result  # noqa: E402

FIRST_MESSAGE_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def served(tiny_model):
    """`s3rt serve` in its own process (its RSS is the server's alone): 4 streams, no idle timeout."""
    proc = start_server(tiny_model, "--max-streams", "4", "--idle-timeout", "0",
                        "--first-message-timeout", str(FIRST_MESSAGE_TIMEOUT_S))
    yield proc
    proc.terminate()
    assert proc.wait(20) == 0


def _client(proc):
    from s3rt.runtime.serving.grpc.client import Client
    return Client(f"127.0.0.1:{proc.port}", timeout_s=10)


def _stub(proc):
    from s3rt.runtime.serving.grpc.stubs import load
    pb, pb_grpc = load()
    channel = grpc.insecure_channel(f"127.0.0.1:{proc.port}", options=[("grpc.max_send_message_length", 64 << 20)])
    return pb, pb_grpc.SegmentationServiceStub(channel), channel


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _active_streams(c, expect: int, within_s: float = 10.0) -> int:
    deadline = time.monotonic() + within_s
    while (n := c.info().active_streams) != expect and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def _normal_stream_works(c) -> None:
    frames, mask = make_clip(3)
    with c.stream(every_frame=True) as s:
        assert s.add_objects(mask, frames[0]).ok
        assert isinstance(s.process(frames[1], seq=1, timeout=30), Result)


def test_open_then_cancel_at_any_moment_never_leaks_a_slot(served):
    """#1: 300 opens cancelled 0-20 ms later (before, during or after the open); no slot is left."""
    pb, stub, channel = _stub(served)
    release = threading.Event()

    def requests():
        yield pb.StreamRequest(open=pb.OpenStream(every_frame=True))
        release.wait(30)

    rng = random.Random(0)
    try:
        for _ in range(300):
            call = stub.Stream(requests())
            time.sleep(rng.uniform(0, 0.02))
            call.cancel()
    finally:
        release.set()
        channel.close()
    with _client(served) as c:
        assert _active_streams(c, 0) == 0
        _normal_stream_works(c)


def test_silent_clients_are_ended_and_never_starve_health_or_info(served):
    """#2: 12 calls that never send a message: health and Info answer within 1 s throughout, each
    silent call ends (cancelled after the first-message timeout, or refused at once), then a
    normal stream works."""
    pb, stub, channel = _stub(served)
    release = threading.Event()
    codes: list = []

    def silent():
        release.wait(30)
        return
        yield  # noqa: unreachable - a request iterator that sends nothing

    def hold(call):
        try:
            for _ in call:
                pass
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name)

    calls = [stub.Stream(silent()) for _ in range(12)]
    readers = [threading.Thread(target=hold, args=(c,), daemon=True) for c in calls]
    for t in readers:
        t.start()
    try:
        with _client(served) as c:
            slowest = 0.0
            until = time.monotonic() + FIRST_MESSAGE_TIMEOUT_S + 1.0
            while time.monotonic() < until:
                t0 = time.monotonic()
                assert c.health() == "SERVING" and c.info().model == "tiny"
                slowest = max(slowest, time.monotonic() - t0)
                time.sleep(0.05)
            assert slowest < 1.0
            for t in readers:
                t.join(FIRST_MESSAGE_TIMEOUT_S + 5)
            assert len(codes) == 12 and set(codes) <= {"CANCELLED", "RESOURCE_EXHAUSTED"}, codes
            assert _active_streams(c, 0) == 0
            _normal_stream_works(c)
    finally:
        release.set()
        channel.close()


def test_controls_to_a_client_that_never_reads_stay_bounded(served):
    """#3: 1 add + 80 updates at 960x1600, no reads: the server stays under +150 MB (was +1.3 GB)."""
    pb, stub, channel = _stub(served)
    from s3rt.runtime.serving.grpc import codec
    h, w = 960, 1600
    frame = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[100:400, 200:600] = 1
    image, mask_image = codec.encode_frame(frame), codec.encode_mask(mask)
    sent = [0]

    def requests():
        yield pb.StreamRequest(open=pb.OpenStream())
        for i in range(81):
            m = pb.MaskControl(request_id=i + 1, frame=pb.Frame(seq=i, capture_ts=time.time(), image=image),
                               mask=mask_image)
            yield pb.StreamRequest(add=m) if i == 0 else pb.StreamRequest(update=m)
            sent[0] += 1

    before = _rss_mb(served.pid)
    call = stub.Stream(requests())                  # never read
    peak, last, still = before, -1, time.monotonic()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and time.monotonic() - still < 3.0:
            peak = max(peak, _rss_mb(served.pid))
            if sent[0] != last:
                last, still = sent[0], time.monotonic()
            time.sleep(0.1)
        peak = max(peak, _rss_mb(served.pid))
    finally:
        call.cancel()
        channel.close()
    assert peak - before < 150, f"server RSS {before:.0f} -> {peak:.0f} MB"
    with _client(served) as c:
        assert _active_streams(c, 0) == 0
        _normal_stream_works(c)


def _png(width: int, height: int, rows_of_data: int | None = None) -> bytes:
    """A greyscale PNG whose header says width x height; its data holds `rows_of_data` zero rows
    (None: all of them). Small on the wire whatever it declares."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = height if rows_of_data is None else rows_of_data
    raw = zlib.compress(bytes((1 + width) * rows), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def test_image_bombs_are_refused_from_their_header(served):
    """#4: a 4800x8000 PNG (about 40 KB) used to cost 1.8 GB and 19 s; a >178 Mpx one ended the
    stream silently. Both are refused with a FrameError (frames) or a control error (masks) at once."""
    pb, _, channel = _stub(served)
    channel.close()
    frames, mask = make_clip(2)
    bomb = _png(8000, 4800)
    giant = _png(20000, 10000, rows_of_data=1)
    assert len(bomb) < 100_000
    before = _rss_mb(served.pid)
    with _client(served) as c, c.stream(every_frame=True) as s:
        s.add_objects(mask, frames[0], seq=0)
        t0 = time.monotonic()
        s.send_image(pb.Image(data=bomb, encoding=pb.ENCODING_PNG), seq=1)
        s.send_image(pb.Image(data=giant, encoding=pb.ENCODING_PNG), seq=2)
        outs = [o for o in (s.next_output(20) for _ in range(3)) if o is not None and o.seq != 0]   # not the add's
        assert time.monotonic() - t0 < 5
        assert all(isinstance(o, FrameFailed) and o.error == "InputError" for o in outs), outs
        assert "4800x8000" in outs[0].message and "exceeds the server's limit" in outs[0].message
        assert "exceeds" in outs[1].message or "more pixels than the decoder allows" in outs[1].message
        from s3rt.errors import InputError
        with pytest.raises(InputError, match="exceeds the server's limit"):
            s.add_objects(mask, frames[1], ids={1: "a"}, raw_mask=pb.Image(data=bomb, encoding=pb.ENCODING_PNG))
        assert isinstance(s.process(frames[1], seq=3), Result)          # the stream goes on
    assert _rss_mb(served.pid) - before < 60


def test_a_mask_with_65535_labels_is_refused_at_once(served):
    """#5: the add used to cost 33 s of quadratic id checks; now the distinct values are counted first."""
    frame = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    mask = np.arange(256 * 256, dtype=np.int64).reshape(256, 256)        # 65,535 object values + background
    with _client(served) as c, c.stream() as s:
        took = []
        for _ in range(3):
            t0 = time.perf_counter()
            with pytest.raises(CapacityError, match="holds 65535 object values"):
                s.add_objects(mask, frame)
            took.append(time.perf_counter() - t0)
        assert min(took) < 0.1, took
        frames, small = make_clip(2)
        assert s.add_objects(small, frames[0]).ok                        # nothing changed, the stream goes on


@pytest.mark.parametrize("how", ["empty-token", "blank-first-line", "empty-file", "mismatched-tls"])
def test_bad_secrets_refuse_to_start_with_one_line(tiny_model, tmp_path, capsys, how):
    """#6 and the TLS weak spot: an empty token used to start an open server, a 0-byte token file
    crashed with a traceback, a mismatched TLS key said only 'Failed to bind'."""
    args = ["serve", "--model", str(tiny_model), "--port", "0"]
    token = tmp_path / "token"
    if how == "empty-token":
        args += ["--token", ""]
    elif how == "blank-first-line":
        token.write_text("\nsecret\n")
        args += ["--token-file", str(token)]
    elif how == "empty-file":
        token.write_bytes(b"")
        args += ["--token-file", str(token)]
    else:
        for n in (1, 2):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=localhost", "-keyout", str(tmp_path / f"k{n}.pem"), "-out", str(tmp_path / f"c{n}.pem")],
                           check=True, capture_output=True, timeout=60)
        args += ["--tls-cert", str(tmp_path / "c1.pem"), "--tls-key", str(tmp_path / "k2.pem")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    want = {"empty-token": "--token is empty", "blank-first-line": "the first line is empty",
            "empty-file": "the first line is empty", "mismatched-tls": "the key does not match the certificate"}[how]
    assert want in err[0]
