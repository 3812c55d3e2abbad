"""`s3rt bench --stream`: the same clip in-process and through a real `s3rt serve` on loopback.

One run, side by side, on one exported model (ONNX Runtime, same thread count everywhere):
1. offline: a Tracker steps every frame in a fresh process (like the server: no torch loaded); steady-state ms per frame (warm-up
   frames excluded) and FPS.
2. served, every frame (no drops): the server is a separate process (`s3rt serve`), the client
   here sends as fast as the server takes them; steady-state ms per frame from the arrival times
   of consecutive results. overhead = served / offline - 1 (encode, gRPC, decode, copies).
3. served, real-time policy (latest frame wins + deadline) at paced input rates (10, 30 FPS and
   as fast as possible): end-to-end latency percentiles (capture stamp at send -> result arrival,
   one wall clock) over processed frames, output FPS and drops by reason.
Client and server share the machine's cores, as they would on a robot.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class StreamBenchOptions:
    model_dir: str | None = None          # an export; else `config` is exported at height x width
    config: str | None = None
    weights: str | None = None
    seed: int = 0
    height: int = 240
    width: int = 427
    frames: int = 60                      # measured frames per condition
    warmup: int = 3
    objects: int = 1
    threads: int | None = None
    rates: list[float] = field(default_factory=lambda: [10.0, 30.0, 0.0])   # 0 = as fast as possible
    deadline_ms: float = 200.0
    clip_seed: int = 0


def _offline(model_dir: str, o: StreamBenchOptions) -> dict:
    """In a fresh process like the server (no torch loaded, same thread count), same clip."""
    spec = json.dumps({"model_dir": model_dir, "options": asdict(o)})
    out = subprocess.run([sys.executable, "-m", "s3rt.benchmarks.stream_bench", spec], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"offline worker failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _clip(model_dir: str, o: StreamBenchOptions) -> tuple[list[np.ndarray], np.ndarray]:
    from s3rt.runtime.manifest import load_manifest
    from s3rt.runtime.io.synthetic import make_clip
    man = load_manifest(model_dir)
    frames, masks = make_clip(o.warmup + o.frames, man.height, man.width, o.objects, seed=o.clip_seed)
    return frames, masks[0].astype(np.int64)


def _offline_worker(model_dir: str, o: StreamBenchOptions) -> dict:
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.tracker import Tracker
    frames, mask = _clip(model_dir, o)
    tracker = Tracker(OnnxRuntimeBackend(model_dir, threads=o.threads), max_short_side=None)
    times = []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        tracker.step(f, mask=mask if i == 0 else None)
        times.append((time.perf_counter() - t0) * 1000)
    ms = np.array(times[o.warmup:])
    return {"ms_per_frame": float(ms.mean()), "p50_ms": float(np.median(ms)), "fps": float(1000 / ms.mean())}


def _start_server(model_dir: str, o: StreamBenchOptions) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "s3rt.cli.main", "serve", "--model", model_dir, "--port", "0", "--max-streams", "2",
           "--deadline-ms", str(o.deadline_ms), "--idle-timeout", "0"]
    if o.threads:
        cmd += ["--threads", str(o.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ))
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"s3rt serve did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def _served(target: str, frames: list[np.ndarray], mask: np.ndarray, o: StreamBenchOptions, *,
            every_frame: bool, fps: float) -> dict:
    from s3rt.runtime.serving.grpc.client import Client
    from s3rt.runtime.serving.grpc.paced_sender import replay
    with Client(target) as client:
        stream = client.stream(every_frame=every_frame)
        stats = replay(stream, frames[0], mask, frames[1:], fps=fps or None)
        arrivals = stream.received_at
    s = stats.summary()
    out = {"results": s["results"], "dropped": s["dropped"], "dropped_total": s["dropped_total"],
           "errors": s["errors"], "e2e_ms": s["e2e_ms"], "fps_out": s["fps_out"],
           "fps_in": fps or None}
    if every_frame:
        done = sorted(arrivals)
        first, last = o.warmup - 1, len(frames) - 1
        if first in arrivals and last in arrivals and last > first:
            ms = (arrivals[last] - arrivals[first]) * 1000 / (last - first)
            out.update(ms_per_frame=ms, fps=1000 / ms)
        out["complete"] = done == list(range(len(frames)))
    return out


def run_stream_bench(o: StreamBenchOptions) -> dict:
    from s3rt.benchmarks.bench import machine_info
    from s3rt.runtime.manifest import load_manifest

    with tempfile.TemporaryDirectory(prefix="s3rt-stream-bench-") as tmp:
        model_dir = o.model_dir
        if model_dir is None:
            from s3rt.export.onnx_export import export_model     # torch: only when exporting here
            log.info("exporting %s at %dx%d", o.config, o.height, o.width)
            export_model(o.config, out_dir=tmp, height=o.height, width=o.width, weights=o.weights, seed=o.seed,
                         check_parity=False)
            model_dir = tmp
        man = load_manifest(model_dir)
        frames, mask = _clip(model_dir, o)
        result: dict = {"schema": "s3rt.benchmarks.stream_bench/1", "options": asdict(o),
                        "model": man.model.name, "size": [man.height, man.width], "machine": machine_info()}
        log.info("offline: %d frames in a fresh process", len(frames))
        result["offline"] = _offline(model_dir, o)
        proc, port = _start_server(model_dir, o)
        try:
            target = f"127.0.0.1:{port}"
            log.info("served, every frame")
            result["served_every_frame"] = _served(target, frames, mask, o, every_frame=True, fps=0)
            result["realtime"] = []
            for rate in o.rates:
                log.info("served, latest frame wins, %s", f"{rate:g} FPS" if rate else "as fast as possible")
                result["realtime"].append(_served(target, frames, mask, o, every_frame=False, fps=rate))
        finally:
            proc.terminate()
            proc.wait(30)
        off, srv = result["offline"], result["served_every_frame"]
        if "ms_per_frame" in srv:
            result["overhead"] = srv["ms_per_frame"] / off["ms_per_frame"] - 1
    return result


def format_stream_markdown(r: dict) -> str:
    m = r["machine"]
    off, ev = r["offline"], r["served_every_frame"]
    lines = [f"### stream benchmark: {r['model']} {r['size'][0]}x{r['size'][1]}, ONNX Runtime CPU, "
             f"threads={r['options']['threads'] or 'default'}, {r['options']['frames']} measured frames",
             f"machine: {m['cpu']}, {m['cores_usable']} cores usable, load {m['load_avg_1min']}; "
             f"deadline {r['options']['deadline_ms']:g} ms", "",
             "| mode | input FPS | output FPS | ms/frame | e2e p50 | e2e p95 | e2e p99 | dropped (reason) |",
             "|---|---|---|---|---|---|---|---|",
             f"| offline (tracker, no transport) | - | {off['fps']:.2f} | {off['ms_per_frame']:.1f} | - | - | - | 0 |",
             f"| served, every frame | max | {ev.get('fps', float('nan')):.2f} | {ev.get('ms_per_frame', float('nan')):.1f} "
             f"| {ev['e2e_ms']['p50']:.0f} | {ev['e2e_ms']['p95']:.0f} | {ev['e2e_ms']['p99']:.0f} | "
             f"{ev['dropped_total']} |"]
    for rt in r["realtime"]:
        reasons = ", ".join(f"{k} {v}" for k, v in rt["dropped"].items() if v) or "-"
        lines.append(f"| served, latest wins | {rt['fps_in']:g} | {rt['fps_out']:.2f} | - | "
                     f"{rt['e2e_ms']['p50']:.0f} | {rt['e2e_ms']['p95']:.0f} | {rt['e2e_ms']['p99']:.0f} | "
                     f"{rt['dropped_total']} ({reasons}) |" if rt["fps_in"] else
                     f"| served, latest wins | max | {rt['fps_out']:.2f} | - | {rt['e2e_ms']['p50']:.0f} | "
                     f"{rt['e2e_ms']['p95']:.0f} | {rt['e2e_ms']['p99']:.0f} | {rt['dropped_total']} ({reasons}) |")
    if "overhead" in r:
        lines += ["", f"serving overhead per frame (served every-frame vs offline): {100 * r['overhead']:+.1f}%"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":          # the offline worker: python -m s3rt.benchmarks.stream_bench SPEC_JSON
    spec = json.loads(sys.argv[1])
    print(json.dumps(_offline_worker(spec["model_dir"], StreamBenchOptions(**spec["options"]))))
