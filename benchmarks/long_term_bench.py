"""`s3rt bench --long-term`: FIFO working memory vs long-term memory over one long stream.

Both trackers run in the same process on the same frames, interleaved frame by frame (the order
alternates every frame), so machine load affects both alike. Reported per backend and memory
mode: latency mean / p50 / p95, the least-squares latency slope (ms per 1000 frames, after
warm-up; ~0 = flat), mean latency of the first and last tenth, state bytes (tracker buffers +
long-term host counters) at warm-up and at the end, consolidation / prune counts and the final
token counts. Process RSS is sampled for both trackers together.

The stream is a synthetic clip (runtime.synthetic) played forwards and backwards repeatedly, so
a stream of any length needs only `CLIP` frames in memory.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3rt.benchmarks.bench import machine_info, rss_mb
from s3rt.configs import InferenceConfig
from s3rt.errors import ConfigError
from s3rt.long_term_config import LongTermConfig

log = logging.getLogger("s3rt.bench.long_term")
CLIP = 100


@dataclass
class LongTermBenchOptions:
    height: int
    width: int
    frames: int
    long_term: LongTermConfig
    backends: tuple[str, ...] = ("torch",)
    config: str | None = "tiny"
    weights: str | None = None
    seed: int = 0
    objects: int = 1
    mem_every: int = 5
    top_k: int = 30
    max_mem_frames: int = 5          # FIFO side
    warmup: int = 20
    threads: int | None = None
    trace_every: int = 100
    clip_seed: int = 0


def _settings(o: LongTermBenchOptions, long_term: bool) -> InferenceConfig:
    return InferenceConfig(mem_every=o.mem_every, max_mem_frames=o.max_mem_frames, top_k=o.top_k,
                           max_objects=max(o.objects, 1), max_buckets=1, long_term=o.long_term if long_term else None)


def _backend(o: LongTermBenchOptions, name: str, settings: InferenceConfig, tmp: Path):
    if name == "torch":
        from s3rt.runtime.backends.pytorch.backend import TorchBackend
        if o.threads:
            import torch
            torch.set_num_threads(o.threads)
        return TorchBackend(o.config, weights=o.weights, seed=o.seed)
    if name == "onnxruntime":
        from s3rt.export.onnx_export import export_model
        from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
        out = tmp / ("lt" if settings.long_term else "fifo")
        export_model(o.config, out_dir=out, height=o.height, width=o.width, weights=o.weights, seed=o.seed,
                     max_objects=settings.max_objects, memory_frames=settings.max_mem_frames, max_buckets=1,
                     top_k=o.top_k, mem_every=o.mem_every, long_term=settings.long_term, check_parity=False,
                     progress=log.debug)
        return OnnxRuntimeBackend(out, threads=o.threads)
    raise ConfigError(f"bench --long-term runs torch or onnxruntime, not '{name}'")


def _summary(lat: list[float], warm: int) -> dict:
    x = np.arange(len(lat))[warm:]
    y = np.asarray(lat[warm:])
    slope = float(np.polyfit(x, y, 1)[0]) * 1000 if len(y) > 2 else None
    tenth = max(len(y) // 10, 1)
    return {"mean_ms": float(y.mean()), "p50_ms": float(np.percentile(y, 50)), "p95_ms": float(np.percentile(y, 95)),
            "slope_ms_per_1000_frames": slope, "first_tenth_ms": float(y[:tenth].mean()),
            "last_tenth_ms": float(y[-tenth:].mean())}


def run_long_term_bench(o: LongTermBenchOptions) -> dict:
    """Run every backend: FIFO and long-term trackers side by side on one stream."""
    from s3rt.runtime.io.synthetic import make_clip
    from s3rt.runtime.tracker import Tracker

    if o.frames <= o.warmup + 2:
        raise ConfigError(f"--frames ({o.frames}) must exceed the warm-up ({o.warmup}) by a few frames")
    clip, masks = make_clip(min(CLIP, o.frames), o.height, o.width, num_objects=o.objects, seed=o.clip_seed)
    order = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))      # ping-pong, no repeated frame
    result = {"machine": machine_info(), "options": {**{k: v for k, v in vars(o).items() if k != "long_term"},
                                                     "long_term": o.long_term.to_dict()}, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="s3rt_ltbench_") as tmp:
        for name in o.backends:
            trackers, backends = {}, []
            for mode in ("fifo", "long_term"):
                s = _settings(o, mode == "long_term")
                be = _backend(o, name, s, Path(tmp) / name).open()
                backends.append(be)
                trackers[mode] = Tracker(be, be.tracker_settings(s), max_short_side=None)
            lat = {m: [] for m in trackers}
            state = {m: [] for m in trackers}
            events = {"consolidate": 0, "prune": 0}
            rss = []
            first = masks[0].astype(np.int64)
            for t in range(o.frames):
                frame = clip[order[t % len(order)]]
                modes = list(trackers) if t % 2 == 0 else list(trackers)[::-1]
                for m in modes:
                    t0 = time.perf_counter()
                    trackers[m].step(frame, mask=first if t == 0 else None)
                    lat[m].append((time.perf_counter() - t0) * 1000)
                for e in trackers["long_term"].long_term_events:
                    events[e.kind] += 1
                if t == o.warmup or t % o.trace_every == 0 or t == o.frames - 1:
                    rss.append((t, rss_mb()))
                    for m in trackers:
                        state[m].append((t, trackers[m].buffer_nbytes()))
            out = {}
            for m, tr in trackers.items():
                warm_bytes = next(b for f, b in state[m] if f >= o.warmup)
                out[m] = {**_summary(lat[m], o.warmup), "state_bytes_warm": warm_bytes,
                          "state_bytes_end": state[m][-1][1],
                          "state_constant": all(b == warm_bytes for f, b in state[m] if f >= o.warmup),
                          "memory_sizes_end": tr.memory_sizes()}
            out["long_term"]["events"] = events
            warm_rss = next(r for f, r in rss if f >= o.warmup)
            out["rss_mb"] = {"warm": warm_rss, "end": rss[-1][1], "delta": rss[-1][1] - warm_rss,
                             "samples": rss}
            out["describe"] = backends[0].describe()
            for be in backends:
                be.close()
            result["backends"][name] = out
    return result


def format_long_term_markdown(r: dict) -> str:
    o, m = r["options"], r["machine"]
    lt = o["long_term"]
    lines = [f"FIFO vs long-term memory, {o['config']} {o['height']}x{o['width']}, {o['frames']} frames "
             f"(warm-up {o['warmup']}), mem_every {o['mem_every']}, top_k {o['top_k']}; FIFO max_mem_frames "
             f"{o['max_mem_frames']}; long-term {lt['max_mem_frames']}/{lt['min_mem_frames']}/{lt['num_prototypes']}/"
             f"{lt['max_num_tokens']}/{lt['buffer_tokens']}. Machine: {m['cpu']}, {m['cores_usable']} usable cores, "
             f"load {m['load_avg_1min']}.", "",
             "| backend | memory | mean ms | p50 | p95 | slope ms/1000 fr | first 10% ms | last 10% ms | "
             "state bytes (warm -> end) | events | tokens at end (perm/work/LT) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, be in r["backends"].items():
        for mode in ("fifo", "long_term"):
            x = be[mode]
            ev = x.get("events")
            ev_s = f"{ev['consolidate']} cons., {ev['prune']} prunes" if ev else "-"
            sizes = ", ".join(f"{s['permanent']}/{s['working']}/{s['long_term']}" for s in x["memory_sizes_end"])
            lines.append(f"| {name} | {mode} | {x['mean_ms']:.1f} | {x['p50_ms']:.1f} | {x['p95_ms']:.1f} | "
                         f"{x['slope_ms_per_1000_frames']:+.3f} | {x['first_tenth_ms']:.1f} | {x['last_tenth_ms']:.1f} | "
                         f"{x['state_bytes_warm']} -> {x['state_bytes_end']}"
                         f"{'' if x['state_constant'] else ' (changed!)'} | {ev_s} | {sizes} |")
        rs = be["rss_mb"]
        lines.append(f"| {name} | (process RSS, both) | | | | | | | {rs['warm']:.1f} -> {rs['end']:.1f} MB "
                     f"({rs['delta']:+.1f}) | | |")
    return "\n".join(lines)
