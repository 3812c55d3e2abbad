"""Speed and memory of the backends on identical synthetic clips, side by side from one run.

Called by ``s3rt bench`` (see its --help); ``run_benchmark(BenchOptions(...))`` is the same
thing for scripts. Nothing here imports torch at module level: the export (parent process,
``--config`` with a graph backend) and the torch worker import it when they need it.

How a run works
---------------
* Inputs: ``s3rt.runtime.io.synthetic`` makes one deterministic clip of moving blobs
  (``warmup + frames`` frames, H x W, K objects, ``clip_seed``) with a K-object first-frame mask.
  Every backend gets the same bytes; each result carries ``input_sha256`` to show it.
* Like for like: with ``--config`` the graph backends (onnxruntime, tensorrt) run graphs exported
  to a temporary folder from the same config, weights (or seeded random weights) and capacity as
  the torch backend; with ``--model DIR`` the manifest gives config, size, capacity and weights
  (torch then needs the same ``--weights``, or uses the manifest's random-weight seed).
* One process per backend: ``python -m s3rt.benchmarks.bench --worker SPEC_JSON`` runs one
  backend and prints one JSON line on stdout (messages go to stderr). Peak RSS (``VmHWM`` in
  /proc/self/status) is process-wide, so only a process of its own gives a backend's own peak.
  Backends run one after another, never at the same time.
* Timing: the latency of a frame is the wall time of ``Tracker.step`` (pre-processing, the
  graphs, state updates, probabilities back at frame size); the first ``warmup`` frames (the
  first one carries the mask) are timed but reported apart (``warmup_ms``). Per-subgraph times
  come from ``s3rt.runtime.backends.timing.TimedBackend`` over the measured frames only (it
  synchronises CUDA around each call, so GPU subgraph times are exact but the proxy costs a
  little). FPS = measured frames / their summed latency.
* ``--memory-trace``: RSS (VmRSS) after every ``trace_every``-th measured frame (default 500
  frames, every 10), with first/last/difference and a least-squares slope over the second half,
  when the memory slots are full and every graph has run (the first memory frames after a short
  warm-up still touch fresh buffers): a stream that keeps allocating shows up as a slope. The
  benchmark's own per-frame timings (a few floats per frame, ~0.2 KB) are part of the RSS.

JSON schema (``--json``)
------------------------
::

    {
      "backends": {                        # results at --height x --width, --objects
        "<backend>": {                     # torch | onnxruntime | tensorrt
          "fps": float,
          "latency_ms": {"p50": f, "p95": f, "p99": f, "mean": f, "max": f},
          "warmup_ms": [float, ...],       # latency of each warm-up frame, first = mask frame
          "subgraphs": {"<graph>": {"mean_ms": f, "calls": int, "p50_ms": f, "max_ms": f,
                                    "total_ms": f}},
          "other_ms": float,               # mean frame latency minus subgraph time per frame
          "peak_mem_mb": float,            # peak host RSS of the backend's process (VmHWM)
          "rss_start_mb": float,           # RSS after imports, before the backend opened
          "peak_gpu_mem_mb": float | null, # torch CUDA only (max_memory_allocated)
          "open_s": float,                 # opening the backend (model build / sessions)
          "frames": int, "warmup": int, "objects": int,
          "input_sha256": str,
          "describe": {...},               # the backend's own description (device, versions)
          "vs_torch": {"pixel_agreement": f, "mean_iou": f},   # non-torch, when torch ran
          "memory_trace": {"every": int, "frame": [int], "rss_mb": [f], "first_mb": f,
                           "last_mb": f, "delta_mb": f, "max_mb": f,      # with --memory-trace
                           "second_half_delta_mb": f, "slope_mb_per_1000_frames": f,
                           "flat": bool}   # slope: least squares over the second half;
                                           # flat: slope x trace length <= max(4 MB, 1 % of first)
        }                                  # a failed backend: {"error": str} only
      },
      "ratios": {"<backend>/torch": float},   # fps(backend) / fps(torch): > 1 = faster
      "sweep": [{"height": int, "width": int, "objects": int,   # with --sweep-*: every point,
                 "backends": {"<backend>": {"fps", "latency_ms", "peak_mem_mb"} | {"error"}}}],
      "settings": {...},                   # every option of the run, inference settings, weights
      "machine": {"cpu": str, "cores": int, "cores_usable": int, "memory_gb": f,
                  "python": str, "platform": str, "s3rt": str, "torch": str | null,
                  "onnxruntime": str | null, "tensorrt": str | null, "gpu": str | null,
                  "load_avg_1min": float | null}   # at the end of the run: > cores = shared, noisy
    }
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from s3rt import __version__
from s3rt.configs import InferenceConfig
from s3rt.errors import ConfigError, MissingDependencyError, S3rtError
from s3rt.optional import optional
from s3rt.runtime.backends.registry import BACKENDS, GRAPH_BACKENDS

log = logging.getLogger("s3rt.bench")

MIN_CAPACITY = 8                       # objects the graphs are exported for, at least (DAVIS: <= 8)
FLAT_TOLERANCE_MB = 4.0                # memory trace: "flat" if |last - first| <= max(this, 1 % of first)
AGREEMENT_MAX_PIXELS = 50_000_000      # masks kept for the torch comparison up to this many pixels
matplotlib = optional("matplotlib", extra="plot")


@dataclass
class BenchOptions:
    height: int
    width: int
    frames: int
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    config: str | None = None
    weights: str | None = None
    seed: int = 0
    model_dir: str | None = None
    objects: int = 1
    warmup: int = 3
    sweep_objects: list[int] = field(default_factory=list)
    sweep_sizes: list[tuple[int, int]] = field(default_factory=list)
    device: str = "cpu"
    provider: str | None = None
    threads: int | None = None
    opt_level: str = "all"
    clip_seed: int = 0
    memory_trace: bool = False
    trace_every: int = 10
    plugin_libs: list[str] = field(default_factory=list)   # TensorRT plugin libraries (--plugin-lib)


# -- process measurements ------------------------------------------------------------------------
def _proc_status_mb(key: str) -> float | None:
    """A kB field of /proc/self/status (VmRSS, VmHWM) in MB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    cur = _proc_status_mb("VmRSS")
    if cur is None:           # no /proc: the peak is the best the resource module offers
        return peak_rss_mb()
    return cur


def peak_rss_mb() -> float:
    peak = _proc_status_mb("VmHWM")
    if peak is None:
        import resource
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024   # bytes on macOS, kB on Linux
    return peak


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    names = [n.strip() for n in out.stdout.splitlines() if n.strip()]
    return ", ".join(names) if out.returncode == 0 and names else None


def machine_info() -> dict:
    """CPU model (/proc/cpuinfo), cores, memory, versions (without importing torch), GPU."""
    cpu = None
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch_v = _version("torch")
    ort_v = _version("onnxruntime") or _version("onnxruntime-gpu")
    return {"cpu": cpu or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "cores_usable": usable, "memory_gb": mem, "python": platform.python_version(),
            "platform": platform.platform(), "s3rt": __version__, "torch": torch_v, "onnxruntime": ort_v,
            "tensorrt": _version("tensorrt"), "gpu": _gpu_name(),
            "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


# -- the worker: one backend in one process ----------------------------------------------------------
def _worker_backend(spec: dict):
    from s3rt.runtime.backends.registry import BackendRequest, build_backend
    return build_backend(BackendRequest(spec["backend"], config=spec["config"], weights=spec["weights"],
                                        seed=spec["seed"], model_dir=spec["model_dir"], device=spec["device"],
                                        provider=spec["provider"], threads=spec["threads"],
                                        opt_level=spec["opt_level"], plugin_libs=tuple(spec.get("plugin_libs", ()))))


def _memory_summary(frames: list[int], rss: list[float], every: int) -> dict:
    """First vs last RSS, and growth over the second half (steady state: memory slots full, every graph run)."""
    x, y = np.array(frames, float), np.array(rss, float)
    half = x >= x[-1] / 2
    xs, ys = x[half], y[half]
    slope = float(np.polyfit(xs, ys, 1)[0] * 1000) if len(xs) >= 2 and np.ptp(xs) > 0 else 0.0
    growth = slope * (x[-1] - x[0]) / 1000         # steady-state slope projected over the whole trace
    return {"every": every, "frame": frames, "rss_mb": [round(v, 2) for v in rss], "first_mb": float(y[0]),
            "last_mb": float(y[-1]), "delta_mb": float(y[-1] - y[0]), "max_mb": float(y.max()),
            "second_half_delta_mb": float(ys[-1] - ys[0]), "slope_mb_per_1000_frames": slope,
            "flat": bool(abs(growth) <= max(FLAT_TOLERANCE_MB, 0.01 * y[0]))}


def run_worker(spec: dict) -> dict:
    """Run one backend over the synthetic clip described by `spec`; the result dict (schema above)."""
    from s3rt.runtime.backends.timing import TimedBackend
    from s3rt.runtime.io.synthetic import iter_clip, make_clip
    from s3rt.runtime.tracker import Tracker

    rss_start = rss_mb()
    warmup, frames, name = spec["warmup"], spec["frames"], spec["backend"]
    total = warmup + frames
    args = (total, spec["height"], spec["width"], spec["objects"], spec["clip_seed"])
    trace_every = spec.get("trace_every")
    # a long trace generates frames on the fly so the clip itself does not fill the memory being traced
    clip = iter_clip(*args) if trace_every else zip(*make_clip(*args))
    backend = _worker_backend(spec)
    sync, torch = None, None
    if name == "torch":
        from s3rt.optional import torch as torch_mod
        torch = torch_mod.load()
        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        if spec["device"].startswith("cuda"):
            sync = torch.cuda.synchronize
    timed = TimedBackend(backend, sync=sync)
    t_open = time.perf_counter()
    timed.open()
    open_s = time.perf_counter() - t_open
    try:
        tracker = Tracker(timed, timed.tracker_settings(InferenceConfig(**spec["settings"])), max_short_side=None)
        cuda = torch is not None and spec["device"].startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        lat: list[float] = []
        digest = hashlib.sha256()
        keep = spec.get("masks_out")
        masks: list[np.ndarray] = []
        trace_x: list[int] = []
        trace_y: list[float] = []
        from tqdm import tqdm
        bar = tqdm(total=total, desc=name, unit="frame", file=sys.stderr, leave=False, disable=None)
        for i, (frame, mask) in enumerate(clip):
            digest.update(frame.tobytes())
            if i == 0:
                digest.update(mask.tobytes())
            if i == warmup:
                timed.reset_stats()
            t0 = time.perf_counter()
            result = tracker.step(frame, mask=mask if i == 0 else None)
            lat.append((time.perf_counter() - t0) * 1000)
            if keep:
                masks.append(result.index_mask.astype(np.uint8))
            m = i - warmup
            if trace_every and m >= 0 and (m % trace_every == 0 or i == total - 1):
                trace_x.append(m)
                trace_y.append(rss_mb())
            bar.update(1)
        bar.close()
        measured = np.array(lat[warmup:])
        subgraphs = timed.stats()
        per_frame_graph_ms = sum(s["total_ms"] for s in subgraphs.values()) / len(measured)
        out = {
            "fps": float(1000 * len(measured) / measured.sum()),
            "latency_ms": {"p50": float(np.percentile(measured, 50)), "p95": float(np.percentile(measured, 95)),
                           "p99": float(np.percentile(measured, 99)), "mean": float(measured.mean()),
                           "max": float(measured.max())},
            "warmup_ms": [round(v, 3) for v in lat[:warmup]],
            "subgraphs": subgraphs,
            "other_ms": float(measured.mean() - per_frame_graph_ms),
            "peak_mem_mb": peak_rss_mb(),
            "rss_start_mb": rss_start,
            "peak_gpu_mem_mb": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "open_s": open_s,
            "frames": frames, "warmup": warmup, "objects": spec["objects"],
            "input_sha256": digest.hexdigest(),
            "describe": timed.describe(),
        }
        if trace_every:
            out["memory_trace"] = _memory_summary(trace_x, trace_y, trace_every)
        if keep:
            np.savez_compressed(keep, masks=np.stack(masks))
        return out
    finally:
        timed.close()


def _worker_main(spec_json: str) -> int:
    """Entry of `python -m s3rt.benchmarks.bench --worker SPEC`: one JSON line on stdout, all else on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    rc = 0
    with contextlib.redirect_stdout(sys.stderr):        # stray prints must not corrupt the JSON line
        try:
            result = run_worker(json.loads(spec_json))
        except S3rtError as exc:
            result, rc = {"error": f"{type(exc).__name__}: {exc}"}, 1
        except Exception as exc:  # noqa: BLE001 - reported to the parent, traceback kept on stderr
            traceback.print_exc()
            result, rc = {"error": f"internal error {type(exc).__name__}: {exc}"}, 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return rc


def _spawn(spec: dict) -> dict:
    cmd = [sys.executable, "-m", "s3rt.benchmarks.bench", "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)   # stderr: the worker's messages, live
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        return {"error": f"{spec['backend']} worker exited with code {proc.returncode} without a result "
                         "(its messages are above)"}
    return result


# -- the parent: graphs, points, workers, comparison --------------------------------------------------
def _check_options(o: BenchOptions) -> None:
    unknown = [b for b in o.backends if b not in BACKENDS]
    if unknown or not o.backends:
        raise ConfigError(f"unknown backend(s) {unknown or o.backends}; choose from {', '.join(BACKENDS)}")
    if len(set(o.backends)) != len(o.backends):
        raise ConfigError(f"backend listed twice: {o.backends}")
    if (o.config is None) == (o.model_dir is None):
        raise ConfigError("give exactly one model: --config NAME [--weights W] (graphs are exported for the run) "
                          "or --model DIR (an 's3rt export' folder)")
    for name, v, lo in (("--frames", o.frames, 1), ("--warmup", o.warmup, 0), ("--objects", o.objects, 1),
                        ("--height", o.height, 16), ("--width", o.width, 16), ("--trace-every", o.trace_every, 1)):
        if v < lo:
            raise ConfigError(f"{name} must be >= {lo}, got {v}")
    if o.threads is not None and o.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {o.threads}")
    if any(k < 1 for k in o.sweep_objects) or any(min(s) < 16 for s in o.sweep_sizes):
        raise ConfigError("sweep objects must be >= 1 and sweep sizes at least 16x16")


def _points(o: BenchOptions) -> list[tuple[int, int, int]]:
    base = (o.height, o.width, o.objects)
    pts = [base] + [(h, w, o.objects) for h, w in o.sweep_sizes] + [(o.height, o.width, k) for k in o.sweep_objects]
    return list(dict.fromkeys(pts))


def _model_dir_setup(o: BenchOptions, sizes: list[tuple[int, int]], capacity: int) -> tuple[str, int, InferenceConfig]:
    """config name, weight seed and settings from an export folder; refuse what would not compare."""
    from s3rt.runtime.manifest import file_sha256, load_manifest
    m = load_manifest(o.model_dir)
    wrong = [f"{h}x{w}" for h, w in sizes if (h, w) != (m.height, m.width)]
    if wrong:
        raise ConfigError(f"{o.model_dir} was exported for {m.height}x{m.width}, the run asks for {', '.join(wrong)}; "
                          "use --config to export each size for the run, or re-export")
    if capacity > m.settings.max_objects:
        raise ConfigError(f"{o.model_dir} holds at most {m.settings.max_objects} objects, the run asks for {capacity}; "
                          "re-export with more --max-objects or use --config")
    seed = o.seed
    if "torch" in o.backends:
        if m.checkpoint_sha256 and not o.weights:
            raise ConfigError(f"the graphs in {o.model_dir} come from a checkpoint "
                              f"(sha256 {m.checkpoint_sha256[:12]}...); pass the same --weights so torch runs "
                              "the same weights")
        if m.checkpoint_sha256 and o.weights and file_sha256(o.weights) != m.checkpoint_sha256:
            raise ConfigError(f"--weights {o.weights} is not the checkpoint {o.model_dir} was exported from "
                              f"(sha256 {m.checkpoint_sha256[:12]}...)")
        if not m.checkpoint_sha256:
            if o.weights:
                raise ConfigError(f"the graphs in {o.model_dir} use random weights ({m.extra.get('weights')}), "
                                  "but --weights was given: they would not compare")
            tag = str(m.extra.get("weights", ""))
            if tag.startswith("random(seed="):
                seed = int(tag[len("random(seed="):-1])
    return m.model.name, seed, m.settings


def _export(o: BenchOptions, size: tuple[int, int], settings: InferenceConfig, out: Path) -> Path:
    from s3rt.export.onnx_export import export_model     # torch: only here
    h, w = size
    log.info("exporting %s at %dx%d for the graph backends (same weights as torch)", o.config, h, w)
    _, parity = export_model(o.config, out_dir=out, height=h, width=w, weights=o.weights, seed=o.seed,
                             max_objects=settings.max_objects, memory_frames=settings.max_mem_frames,
                             max_buckets=settings.max_buckets, top_k=settings.top_k, mem_every=settings.mem_every,
                             progress=log.debug)
    worst = max(parity, key=lambda r: r.max_abs, default=None)
    if worst is not None:
        log.info("export parity (ONNX Runtime vs torch, per graph): worst max |diff| %.2e (%s.%s)",
                 worst.max_abs, worst.graph, worst.output)
    return out


def _agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """Pixel agreement and mean per-object IoU (every frame) of two (T, H, W) index-mask stacks."""
    from s3rt.runtime.compare import clip_ious
    ious = clip_ious(ref, got, skip_first=False)
    return {"pixel_agreement": float((ref == got).mean()), "mean_iou": float(np.mean(ious)) if ious else 1.0}


def run_benchmark(o: BenchOptions) -> dict:
    """Run every backend at every point; the result dict (schema in the module docstring)."""
    _check_options(o)
    points = _points(o)
    capacity = max(MIN_CAPACITY, *(k for _, _, k in points))
    sizes = list(dict.fromkeys((h, w) for h, w, _ in points))
    config, seed = o.config, o.seed
    settings = InferenceConfig(max_objects=capacity)
    if o.model_dir is not None:
        config, seed, settings = _model_dir_setup(o, sizes, capacity)
    graphs_needed = any(b in GRAPH_BACKENDS for b in o.backends)
    compare = "torch" in o.backends and len(o.backends) > 1 and not o.memory_trace
    results: dict[tuple[int, int, int], dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="s3rt-bench-") as tmp:
        model_dirs: dict[tuple[int, int], str | None] = {}
        for size in sizes:
            if not graphs_needed:
                model_dirs[size] = None
            elif o.model_dir is not None:
                model_dirs[size] = o.model_dir
            else:
                model_dirs[size] = str(_export(o, size, settings, Path(tmp) / f"{size[0]}x{size[1]}"))
        for h, w, k in points:
            row: dict[str, dict] = {}
            keep = compare and (o.warmup + o.frames) * h * w <= AGREEMENT_MAX_PIXELS
            for b in o.backends:
                spec = {"backend": b, "config": config, "weights": o.weights, "seed": seed,
                        "model_dir": model_dirs[(h, w)], "device": o.device, "provider": o.provider,
                        "threads": o.threads, "opt_level": o.opt_level, "plugin_libs": list(o.plugin_libs), "height": h, "width": w, "objects": k,
                        "frames": o.frames, "warmup": o.warmup, "clip_seed": o.clip_seed,
                        "settings": asdict(settings), "trace_every": o.trace_every if o.memory_trace else None,
                        "masks_out": str(Path(tmp) / f"masks-{b}-{h}x{w}-{k}.npz") if keep else None}
                log.info("%s at %dx%d, %d object(s): %d frames + %d warm-up", b, h, w, k, o.frames, o.warmup)
                res = _spawn(spec)
                if "error" in res:
                    log.error("%s at %dx%d, %d object(s) failed: %s", b, h, w, k, res["error"])
                else:
                    log.info("%s: %.2f FPS, p50 %.1f ms, peak RSS %.0f MB", b, res["fps"], res["latency_ms"]["p50"],
                             res["peak_mem_mb"])
                row[b] = res
            if keep and "error" not in row.get("torch", {"error": 1}):
                ref = np.load(Path(tmp) / f"masks-torch-{h}x{w}-{k}.npz")["masks"]
                for b in o.backends:
                    path = Path(tmp) / f"masks-{b}-{h}x{w}-{k}.npz"
                    if b != "torch" and "error" not in row[b] and path.is_file():
                        row[b]["vs_torch"] = _agreement(ref, np.load(path)["masks"])
            results[(h, w, k)] = row
    base = results[points[0]]
    ratios = {f"{b}/torch": r["fps"] / base["torch"]["fps"] for b, r in base.items()
              if b != "torch" and "fps" in r and "fps" in base.get("torch", {})}
    out = {"backends": base, "ratios": ratios,
           "settings": {"config": config, "weights": o.weights or f"random(seed={seed})", "model_dir": o.model_dir,
                        "height": o.height, "width": o.width, "frames": o.frames, "warmup": o.warmup,
                        "objects": o.objects, "sweep_objects": o.sweep_objects,
                        "sweep_sizes": [f"{h}x{w}" for h, w in o.sweep_sizes], "backends": o.backends,
                        "device": o.device, "provider": o.provider, "threads": o.threads,
                        "ort_opt_level": o.opt_level, "clip_seed": o.clip_seed, "memory_trace": o.memory_trace,
                        "trace_every": o.trace_every if o.memory_trace else None,
                        "inference": asdict(settings), "graphs": "model_dir" if o.model_dir else
                        ("exported for the run" if graphs_needed else None)},
           "machine": machine_info()}
    if o.sweep_objects or o.sweep_sizes:
        out["sweep"] = [{"height": h, "width": w, "objects": k,
                         "backends": {b: ({"error": r["error"]} if "error" in r else
                                          {"fps": r["fps"], "latency_ms": r["latency_ms"],
                                           "peak_mem_mb": r["peak_mem_mb"]}) for b, r in results[(h, w, k)].items()}}
                        for h, w, k in points]
    return out


def failed(result: dict) -> list[str]:
    """Backends (at any point) that reported an error."""
    bad = [b for b, r in result["backends"].items() if "error" in r]
    for p in result.get("sweep", []):
        bad += [f"{b}@{p['height']}x{p['width']}/{p['objects']}" for b, r in p["backends"].items() if "error" in r]
    return list(dict.fromkeys(bad))


# -- reporting ------------------------------------------------------------------------------------
def _f(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _device(r: dict) -> str:
    d = r.get("describe", {})
    parts = [d.get("device") or d.get("provider") or ""]
    if d.get("threads") not in (None, "default"):
        parts.append(f"{d['threads']} threads")
    if d.get("opt_level") not in (None, "all"):
        parts.append(f"opt {d['opt_level']}")
    return ", ".join(p for p in parts if p)


def format_markdown(result: dict) -> str:
    s, m, be = result["settings"], result["machine"], result["backends"]
    ok = {b: r for b, r in be.items() if "error" not in r}
    torch_fps = ok.get("torch", {}).get("fps")
    versions = ", ".join(f"{k} {m[k]}" for k in ("torch", "onnxruntime", "tensorrt") if m.get(k))
    lines = [f"### s3rt bench: {s['config']} at {s['height']}x{s['width']}, {s['objects']} object(s), "
             f"{s['frames']} frames (+{s['warmup']} warm-up)", "",
             f"Machine: {m['cpu']}, {m['cores_usable']} usable cores of {m['cores']}, Python {m['python']}, "
             f"{versions}; "
             f"GPU: {m['gpu'] or 'none'}; load average {_f(m.get('load_avg_1min'), 2)} at the end. "
             f"Weights: {s['weights']}.", "",
             "| backend | device | FPS | x torch | p50 ms | p95 ms | p99 ms | mean ms | first frame ms | "
             "peak RSS MB | peak GPU MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b, r in be.items():
        if "error" in r:
            lines.append(f"| {b} | failed: {r['error']} | | | | | | | | | |")
            continue
        ratio = r["fps"] / torch_fps if torch_fps else None
        lat = r["latency_ms"]
        lines.append(f"| {b} | {_device(r)} | {_f(r['fps'], 2)} | {_f(ratio, 2)} | {_f(lat['p50'])} | "
                     f"{_f(lat['p95'])} | {_f(lat['p99'])} | {_f(lat['mean'])} | "
                     f"{_f(r['warmup_ms'][0] if r['warmup_ms'] else None)} | {_f(r['peak_mem_mb'], 0)} | "
                     f"{_f(r['peak_gpu_mem_mb'], 0)} |")
    if ok:
        names = list(ok)
        graphs = list(dict.fromkeys(g for r in ok.values() for g in r["subgraphs"]))
        head = " | ".join(f"{b} ms (calls)" for b in names)
        extra = [b for b in names if b != "torch"] if "torch" in ok else []
        lines += ["", "Per subgraph, mean ms per call over the measured frames"
                  + (" (speed-up = torch ms / backend ms)" if extra else "") + ":", "",
                  f"| graph | {head} |" + "".join(f" {b} speed-up |" for b in extra),
                  "|---|" + "---:|" * (len(names) + len(extra))]
        for g in graphs + ["(other per frame)"]:
            cells, vals = [], {}
            for b in names:
                if g == "(other per frame)":
                    vals[b] = ok[b]["other_ms"]
                    cells.append(_f(vals[b], 2))
                else:
                    st = ok[b]["subgraphs"].get(g)
                    vals[b] = st["mean_ms"] if st else None
                    cells.append(f"{st['mean_ms']:.2f} ({st['calls']})" if st else "-")
            sp = [_f(vals["torch"] / vals[b] if vals.get("torch") and vals.get(b) else None, 2) for b in extra]
            lines.append(f"| {g} | " + " | ".join(cells) + " |" + "".join(f" {c} |" for c in sp))
        agree = {b: r["vs_torch"] for b, r in ok.items() if "vs_torch" in r}
        if agree:
            lines += ["", "Masks vs torch (same inputs and weights): " + "; ".join(
                f"{b}: {100 * a['pixel_agreement']:.2f} % pixels equal, mean IoU {a['mean_iou']:.4f}"
                for b, a in agree.items())]
    traces = {b: r["memory_trace"] for b, r in ok.items() if "memory_trace" in r}
    if traces:
        lines += ["", "Memory trace (RSS every "
                  f"{next(iter(traces.values()))['every']} frames after warm-up):", "",
                  "| backend | frames | RSS first MB | RSS last MB | last - first MB | second half MB | "
                  "slope MB / 1000 frames (2nd half) | max MB | flat |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for b, t in traces.items():
            lines.append(f"| {b} | {t['frame'][-1] + 1} | {t['first_mb']:.1f} | {t['last_mb']:.1f} | "
                         f"{t['delta_mb']:+.2f} | {t['second_half_delta_mb']:+.2f} | "
                         f"{t['slope_mb_per_1000_frames']:+.3f} | {t['max_mb']:.1f} | {'yes' if t['flat'] else 'NO'} |")
    if result.get("sweep"):
        names = list(be)
        lines += ["", "Sweep (FPS):", "", "| size | objects | " + " | ".join(names) + " |"
                  + "".join(f" {b}/torch |" for b in names if b != "torch" and "torch" in names),
                  "|---|---:|" + "---:|" * len(names) + "---:|" * sum(b != "torch" and "torch" in names for b in names)]
        for p in result["sweep"]:
            fps = {b: p["backends"].get(b, {}).get("fps") for b in names}
            cells = [_f(fps[b], 2) if fps[b] else "failed" for b in names]
            rat = [_f(fps[b] / fps["torch"] if fps.get(b) and fps.get("torch") else None, 2)
                   for b in names if b != "torch" and "torch" in names]
            lines.append(f"| {p['height']}x{p['width']} | {p['objects']} | " + " | ".join(cells) + " |"
                         + "".join(f" {c} |" for c in rat))
    return "\n".join(lines) + "\n"


def write_plot(result: dict, path: str | Path) -> bool:
    """PNG: FPS per backend, latency percentiles, sweeps and memory traces. False if matplotlib is missing."""
    try:
        mpl = matplotlib.load()
    except MissingDependencyError as exc:
        print(f"s3rt bench: --plot skipped: {exc}; the JSON and markdown are complete without it", file=sys.stderr)
        return False
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    be = {b: r for b, r in result["backends"].items() if "error" not in r}
    names = list(be)
    panels = ["fps", "latency"]
    sweep = result.get("sweep", [])
    s = result["settings"]
    if s["sweep_objects"]:
        panels.append("objects")
    if s["sweep_sizes"]:
        panels.append("sizes")
    if any("memory_trace" in r for r in be.values()):
        panels.append("memory")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "fps":
            ax.bar(names, [be[b]["fps"] for b in names], color="tab:blue")
            ax.set_ylabel("frames / s")
            ax.set_title("throughput")
        elif panel == "latency":
            x = np.arange(len(names))
            for i, q in enumerate(("p50", "p95", "p99")):
                ax.bar(x + (i - 1) * 0.27, [be[b]["latency_ms"][q] for b in names], 0.27, label=q)
            ax.set_xticks(x, names)
            ax.set_ylabel("ms / frame")
            ax.set_title("latency")
            ax.legend()
        elif panel in ("objects", "sizes"):
            for b in names:
                if panel == "objects":
                    base_size = (s["height"], s["width"])
                    pts = sorted((p["objects"], p["backends"][b]["fps"]) for p in sweep
                                 if (p["height"], p["width"]) == base_size and "fps" in p["backends"].get(b, {}))
                else:
                    pts = sorted((p["height"] * p["width"] / 1e6, p["backends"][b]["fps"]) for p in sweep
                                 if p["objects"] == s["objects"] and "fps" in p["backends"].get(b, {}))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=b)
            ax.set_xlabel("objects" if panel == "objects" else "megapixels per frame")
            ax.set_ylabel("frames / s")
            ax.set_title("FPS vs " + ("objects" if panel == "objects" else "frame size"))
            ax.legend()
        else:
            for b in names:
                t = be[b].get("memory_trace")
                if t:
                    ax.plot(t["frame"], t["rss_mb"], label=b)
            ax.set_xlabel("frame (after warm-up)")
            ax.set_ylabel("RSS MB")
            ax.set_title("process memory")
            ax.legend()
    fig.suptitle(f"s3rt bench: {s['config']} {s['height']}x{s['width']}, {s['objects']} object(s) "
                 f"- {result['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    from s3rt.cli.main import main
    sys.exit(main(["bench", *sys.argv[1:]]))
