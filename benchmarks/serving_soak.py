"""Load, soak and attack figures of `s3rt serve` (issue 22), side by side in one run.

A real server process on loopback (tiny export, 96x160, ONNX Runtime, 1 thread, --idle-timeout 0).
A well-behaved probe stream sends a frame every 100 ms and waits for its result the whole time;
each scenario reports the server's RSS before it and at its peak, and the probe's round-trip
latency p50 / p99 while the scenario ran:

- baseline: nothing else;
- load: 4, then 8 streams x 300 frames, every frame (each stream checks that it got exactly its
  own 300 results, in order, with its own object ids: nothing lost, duplicated or misrouted);
- churn: 1000 streams opened and cancelled 0-20 ms later (active streams back to the probe only);
- a never-reading client sending 3000 frames;
- bombs: 20 PNG frames and 20 PNG masks declaring 4800x8000 (about 40 KB each);
- amplification: 20 adds with 65,535 mask labels, 5 removes of 200,000 ids, 12 silent calls,
  1 add + 80 updates at 960x1600 never read.

    python -m s3rt.benchmarks.serving_soak --json soak.json --markdown soak.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

H, W = 96, 160


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes((1 + width) * height), 9)) + chunk(b"IEND", b""))


def _clip(n: int, h: int = H, w: int = W, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for t in range(n):
        img = np.full((h, w, 3), 80, np.uint8) + rng.integers(0, 25, (h, w, 3), dtype=np.uint8)
        img[(yy - h // 3) ** 2 + (xx - (w // 4 + t % 40)) ** 2 < (h // 5) ** 2] = (220, 40, 40)
        frames.append(img)
    mask = np.zeros((h, w), np.int64)
    mask[(yy - h // 3) ** 2 + (xx - w // 4) ** 2 < (h // 5) ** 2] = 1
    return frames, mask


class Server:
    def __init__(self, model: Path, max_streams: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "s3rt.cli.main", "serve", "--model", str(model),
                                      "--threads", "1", "--port", "0", "--max-streams", str(max_streams),
                                      "--idle-timeout", "0", "--first-message-timeout", "2"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"server did not start: {line!r}")
        self.target = f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class Probe:
    """A well-behaved stream: one frame every 100 ms, round-trip latency of each."""

    def __init__(self, target: str) -> None:
        from s3rt.runtime.serving.grpc.client import Client
        self.client = Client(target, timeout_s=30)
        self.frames, mask = _clip(50, seed=9)
        self.stream = self.client.stream(deadline_ms=None)
        self.stream.add_objects(mask, self.frames[0], ids={1: "probe"})
        self.latencies: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 1
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                out = self.stream.process(self.frames[seq % len(self.frames)], seq=seq, timeout=30)
                if type(out).__name__ == "Result":
                    self.latencies.append((time.perf_counter() - t0) * 1000)
                else:
                    self.failures += 1
            except Exception:  # noqa: BLE001 - counted: the probe must outlive any attack
                self.failures += 1
            seq += 1
            self._stop.wait(0.1)

    def window(self) -> int:
        return len(self.latencies)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(40)
        self.stream.close()
        self.client.close()


@contextmanager
def measured(name: str, server: Server, probe: Probe, rows: list[dict]):
    before = server.rss_mb()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], server.rss_mb())
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, failures = probe.window(), probe.failures
    row: dict = {"scenario": name}
    t0 = time.perf_counter()
    try:
        yield row
    finally:
        done.set()
        sampler.join()
        lat = np.array(probe.latencies[start:] or [np.nan])
        row.update(seconds=round(time.perf_counter() - t0, 1), rss_before_mb=round(before),
                   rss_peak_mb=round(max(peak[0], server.rss_mb())), rss_after_mb=round(server.rss_mb()),
                   probe_frames=len(probe.latencies) - start, probe_failures=probe.failures - failures,
                   probe_p50_ms=round(float(np.nanpercentile(lat, 50)), 1),
                   probe_p99_ms=round(float(np.nanpercentile(lat, 99)), 1))
        rows.append(row)
        print(json.dumps(row), flush=True)


def load(target: str, streams: int, frames: int) -> dict:
    """`streams` every-frame streams x `frames` frames at once; each checks its own results."""
    from s3rt.runtime.serving.grpc.client import Client
    clip, mask = _clip(frames + 1, seed=3)
    bad: list[str] = []

    def one(k: int) -> None:
        with Client(target, timeout_s=60) as c, c.stream(every_frame=True, name=f"load{k}") as s:
            me = f"s{k}"
            s.add_objects(mask, clip[0], ids={1: me})
            for i in range(1, frames + 1):
                s.send(clip[i], seq=i)
            got = [s.next_output(120) for _ in range(frames + 1)]       # the add's result comes first
            seqs = [o.seq for o in got if o is not None and o.seq != 0]
            ids = {o2.id for o in got if o is not None and hasattr(o, "objects") for o2 in o.objects}
            if seqs != list(range(1, frames + 1)) or ids != {me}:
                bad.append(f"{me}: {len(seqs)} outputs, in order {seqs == sorted(seqs)}, ids {sorted(ids)}")

    threads = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {"outcome": f"all {streams} x {frames} results, in order, own ids" if not bad else "; ".join(bad),
            "frames_per_s": round(streams * frames / took, 1)}


def churn(target: str, loops: int) -> dict:
    import grpc
    from s3rt.runtime.serving.grpc.client import Client
    from s3rt.runtime.serving.grpc.stubs import load as load_stubs
    pb, pb_grpc = load_stubs()
    release = threading.Event()

    def requests():
        yield pb.StreamRequest(open=pb.OpenStream())
        release.wait(60)

    rng = random.Random(0)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        for _ in range(loops):
            call = stub.Stream(requests())
            time.sleep(rng.uniform(0, 0.02))
            call.cancel()
        release.set()
    with Client(target) as c:
        deadline = time.monotonic() + 10
        while c.info().active_streams > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"outcome": f"active streams after: {c.info().active_streams} (the probe)"}


def raw_stream(target: str, requests, read: bool = False):
    import grpc
    from s3rt.runtime.serving.grpc.stubs import load as load_stubs
    _, pb_grpc = load_stubs()
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
    return channel, pb_grpc.SegmentationServiceStub(channel).Stream(requests)


def never_reading(target: str, frames: int) -> dict:
    from s3rt.runtime.serving.grpc import codec
    pb = codec.pb
    clip, mask = _clip(20, seed=4)
    sent = [0]

    def requests():
        yield pb.StreamRequest(open=pb.OpenStream())
        yield pb.StreamRequest(add=pb.MaskControl(request_id=1, frame=pb.Frame(seq=0, image=codec.encode_frame(clip[0])),
                                                  mask=codec.encode_mask(mask)))
        images = [codec.encode_frame(f) for f in clip]
        for i in range(1, frames + 1):
            yield pb.StreamRequest(frame=pb.Frame(seq=i, capture_ts=time.time(), image=images[i % len(images)]))
            sent[0] += 1

    channel, call = raw_stream(target, requests())
    deadline = time.monotonic() + 120
    while sent[0] < frames and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    code = None
    try:
        for _ in call:                          # now read: what is left, and how the stream ended
            pass
    except Exception as exc:  # noqa: BLE001 - grpc.RpcError: the status is the outcome
        code = exc.code().name
    channel.close()
    return {"outcome": f"{sent[0]} frames sent; stream ended {code or 'OK'}"}


def bombs(target: str, n: int) -> dict:
    from s3rt.errors import InputError
    from s3rt.runtime.serving.grpc.client import Client
    from s3rt.runtime.serving.grpc import codec
    pb = codec.pb
    bomb = _png(8000, 4800)
    clip, mask = _clip(2, seed=5)
    refused = 0
    with Client(target) as c, c.stream(every_frame=True) as s:
        s.add_objects(mask, clip[0])
        for i in range(n):
            s.send_image(pb.Image(data=bomb, encoding=pb.ENCODING_PNG), seq=i + 1)
        refused += sum(1 for _ in range(n + 1) if type(s.next_output(30)).__name__ == "FrameFailed")
        for _ in range(n):
            try:
                s.add_objects(mask, clip[1], ids={1: "x"}, raw_mask=pb.Image(data=bomb, encoding=pb.ENCODING_PNG))
            except InputError:
                refused += 1
    return {"outcome": f"{refused} of {2 * n} refused ({len(bomb) // 1000} KB each)"}


def amplification(target: str) -> dict:
    from s3rt.errors import CapacityError
    from s3rt.runtime.serving.grpc.client import Client
    from s3rt.runtime.serving.grpc import codec
    pb = codec.pb
    frame = np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    labels = np.arange(256 * 256, dtype=np.int64).reshape(256, 256)
    took, refused = [], 0
    with Client(target) as c, c.stream() as s:
        for _ in range(20):
            t0 = time.perf_counter()
            try:
                s.add_objects(labels, frame)
            except CapacityError:
                refused += 1
            took.append((time.perf_counter() - t0) * 1000)
        for _ in range(5):
            try:
                s.remove_objects([f"id{i}" for i in range(200_000)], timeout=120)
            except CapacityError:
                refused += 1
    release = threading.Event()

    def silent():
        release.wait(10)
        return
        yield  # noqa: unreachable

    calls = [raw_stream(target, silent()) for _ in range(12)]
    ended = 0
    for channel, call in calls:
        try:
            for _ in call:
                pass
        except Exception:  # noqa: BLE001 - cancelled or refused: ended
            ended += 1
        channel.close()
    release.set()
    h, w = 960, 1600
    big = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[100:400, 200:600] = 1
    image, mask_image = codec.encode_frame(big), codec.encode_mask(mask)

    def controls():
        yield pb.StreamRequest(open=pb.OpenStream())
        for i in range(81):
            m = pb.MaskControl(request_id=i + 1, frame=pb.Frame(seq=i, image=image), mask=mask_image)
            yield pb.StreamRequest(add=m) if i == 0 else pb.StreamRequest(update=m)

    channel, call = raw_stream(target, controls())
    time.sleep(20)
    call.cancel()
    channel.close()
    return {"outcome": f"{refused} of 25 adds/removes refused, 65,535-label add p50 "
                       f"{np.percentile(took, 50):.0f} ms; {ended} of 12 silent calls ended; 81 unread mask "
                       "controls at 960x1600 for 20 s"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an export at 96x160 (default: the tiny config exported now)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else Path(tmp) / "tiny"
        if not args.model:
            from s3rt.export.onnx_export import export_model
            export_model("tiny", out_dir=model, height=H, width=W, max_objects=4, max_buckets=3, seed=3,
                         check_parity=False)
        server = Server(model, max_streams=9)
        probe = Probe(server.target)
        rows: list[dict] = []
        try:
            with measured("baseline (probe alone, 5 s)", server, probe, rows) as row:
                time.sleep(5)
                row["outcome"] = "-"
            for n in (4, 8):
                with measured(f"load: {n} streams x 300 frames", server, probe, rows) as row:
                    row.update(load(server.target, n, 300))
            with measured("churn: 1000 open/cancel", server, probe, rows) as row:
                row.update(churn(server.target, 1000))
            with measured("never-reading client, 3000 frames", server, probe, rows) as row:
                row.update(never_reading(server.target, 3000))
            with measured("bombs: 20 frames + 20 masks of 4800x8000", server, probe, rows) as row:
                row.update(bombs(server.target, 20))
            with measured("amplification (labels, ids, silent calls, unread controls)", server, probe, rows) as row:
                row.update(amplification(server.target))
        finally:
            probe.stop()
            server.stop()
    table = ["| scenario | outcome | s | RSS before / peak / after (MB) | probe p50 / p99 (ms) | probe frames "
             "(failed) |", "|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['scenario']} | {r.get('outcome', '')}{', ' + str(r['frames_per_s']) + ' frames/s' if 'frames_per_s' in r else ''} "
                     f"| {r['seconds']} | {r['rss_before_mb']} / {r['rss_peak_mb']} / {r['rss_after_mb']} "
                     f"| {r['probe_p50_ms']} / {r['probe_p99_ms']} | {r['probe_frames']} ({r['probe_failures']}) |")
    text = "\n".join(table) + "\n"
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
