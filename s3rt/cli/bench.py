"""Benchmark backends side by side on one synthetic clip: FPS, latency percentiles, per-subgraph
time, peak memory, and the ratio of each backend to torch, from one run.

Every backend gets the same deterministic clip (moving blobs, K objects on the first frame) and
runs in its own process, so its peak RSS is its own. With --config, the graph backends run
graphs exported for this run from the same weights/seed; with --model, an existing export.
Warm-up frames are timed but reported apart. Prints a markdown table (stdout); --json writes
everything (schema: s3rt.benchmarks.bench), --plot a PNG (needs matplotlib: the 'plot' extra).

examples:
  s3rt bench --config s3-r50 --height 240 --width 427 --frames 12 --backends torch,onnxruntime --json r50.json
  s3rt bench --config tiny --height 240 --width 427 --frames 20 --sweep-objects 1,2,4,8 --plot sweep.png
  s3rt bench --model exported/ --height 480 --width 854 --frames 50 --backends onnxruntime,tensorrt --device cuda
  s3rt bench --config tiny --height 240 --width 427 --backends onnxruntime --memory-trace --json mem.json
  s3rt bench --long-term --config tiny --height 120 --width 214 --frames 2000 --backends torch,onnxruntime
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from s3rt.cli.common import add_model_args, add_verbose
from s3rt.errors import ConfigError, InputError

log = logging.getLogger("s3rt.bench")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,2,4,8, got '{text}'") from None


def _size_list(text: str) -> list[tuple[int, int]]:
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        h, sep, w = item.lower().partition("x")
        if not sep or not h.isdigit() or not w.isdigit():
            raise argparse.ArgumentTypeError(f"expected sizes like 240x427,480x854 (HEIGHTxWIDTH), got '{item}'")
        out.append((int(h), int(w)))
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark backends side by side (FPS, latency, memory)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    g = p.add_argument_group("backends")
    g.add_argument("--backends", default="torch,onnxruntime",
                   help="comma-separated: torch, onnxruntime, tensorrt (default torch,onnxruntime)")
    g.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:i] (default cpu)")
    g.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"),
                   help="ONNX Runtime execution provider (default: cpu, or cuda with --device cuda)")
    g.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime (default: their own)")
    g.add_argument("--ort-opt-level", choices=("disable", "basic", "extended", "all"), default="all",
                   help="ONNX Runtime graph optimisation level (default all)")
    from s3rt.cli.common import add_plugin_lib
    add_plugin_lib(g)
    c = p.add_argument_group("clip")
    c.add_argument("--height", type=int, required=True, help="frame height (the graphs' working size)")
    c.add_argument("--width", type=int, required=True, help="frame width")
    c.add_argument("--frames", type=int, help="measured frames (default 500 with --memory-trace; else required)")
    c.add_argument("--warmup", type=int, default=3, help="warm-up frames before them, incl. the mask frame (3)")
    c.add_argument("--objects", type=int, default=1, help="objects in the first-frame mask (1)")
    c.add_argument("--clip-seed", type=int, default=0, help="seed of the synthetic clip (0)")
    c.add_argument("--sweep-objects", type=_int_list, default=[], metavar="1,2,4,8",
                   help="also run these object counts (at --height x --width)")
    c.add_argument("--sweep-sizes", type=_size_list, default=[], metavar="240x427,480x854",
                   help="also run these sizes (with --objects); graphs are exported per size")
    c.add_argument("--memory-trace", action="store_true",
                   help="record RSS every --trace-every frames and report its growth (flat = no leak)")
    c.add_argument("--trace-every", type=int, default=10, help="frames between RSS samples (10)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", help="write all results as JSON")
    o.add_argument("--markdown", metavar="OUT.md", help="also write the markdown table to a file")
    o.add_argument("--plot", metavar="OUT.png", help="PNG of FPS, latency percentiles and sweeps (matplotlib)")
    st = p.add_argument_group("stream benchmark (--stream)")
    st.add_argument("--stream", action="store_true", help="instead: offline vs served through a real 's3rt serve' "
                    "on loopback (ONNX Runtime): throughput, serving overhead, e2e p50/p95/p99 at paced rates, drops")
    st.add_argument("--rates", default="10,30,0", help="with --stream: input FPS to pace at, 0 = as fast as "
                    "possible (default 10,30,0)")
    st.add_argument("--deadline-ms", type=float, default=200.0, help="with --stream: the server's deadline (200)")
    lt = p.add_argument_group("long-term benchmark (--long-term)")
    lt.add_argument("--mem-every", type=int, default=5, help="with --long-term: memory frame every N frames (5)")
    lt.add_argument("--top-k", type=int, default=30, help="with --long-term: readout top-k (30)")
    from s3rt.cli.common import add_long_term_args
    add_long_term_args(p)       # --long-term: instead, FIFO vs long-term over one long stream, side by side
    add_verbose(p)
    p.set_defaults(func=run)


def _run_stream(args: argparse.Namespace) -> int:
    from s3rt.benchmarks.stream_bench import StreamBenchOptions, format_stream_markdown, run_stream_bench

    if args.model is None and args.config is None:
        raise ConfigError("--stream needs --model DIR or --config NAME (exported here at --height x --width)")
    try:
        rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--rates: expected comma-separated numbers like 10,30,0, got '{args.rates}'") from None
    opts = StreamBenchOptions(model_dir=args.model, config=args.config, weights=args.weights, seed=args.seed,
                              height=args.height, width=args.width, frames=args.frames or 60, warmup=args.warmup,
                              objects=args.objects, threads=args.threads, rates=rates, deadline_ms=args.deadline_ms,
                              clip_seed=args.clip_seed)
    result = run_stream_bench(opts)
    return _report(args, result, format_stream_markdown(result))


def _run_long_term(args: argparse.Namespace) -> int:
    from s3rt.benchmarks.long_term_bench import LongTermBenchOptions, format_long_term_markdown, run_long_term_bench
    from s3rt.cli.common import long_term_settings

    if args.model is not None:
        raise ConfigError("--long-term exports its own FIFO and long-term graphs: give --config NAME, not --model")
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    opts = LongTermBenchOptions(height=args.height, width=args.width, frames=args.frames or 2000,
                                long_term=long_term_settings(args), backends=backends, config=args.config or "tiny",
                                weights=args.weights, seed=args.seed, objects=args.objects, mem_every=args.mem_every,
                                top_k=args.top_k, warmup=max(args.warmup, 20), threads=args.threads,
                                trace_every=args.trace_every, clip_seed=args.clip_seed)
    result = run_long_term_bench(opts)
    return _report(args, result, format_long_term_markdown(result))


def _report(args: argparse.Namespace, result: dict, table: str) -> int:
    """Print the markdown table; also write it (--markdown) and the raw result (--json) when asked."""
    print(table)
    for path, text in ((args.json, json.dumps(result, indent=2) + "\n"), (args.markdown, table)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.stream:
        return _run_stream(args)
    if args.long_term or args.lt_preset:
        return _run_long_term(args)
    from s3rt.benchmarks.bench import BenchOptions, failed, format_markdown, run_benchmark, write_plot

    frames = args.frames
    if frames is None:
        if not args.memory_trace:
            raise ConfigError("--frames N is required (the number of measured frames)")
        frames = 500
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    opts = BenchOptions(height=args.height, width=args.width, frames=frames, backends=backends, config=args.config,
                        weights=args.weights, seed=args.seed, model_dir=args.model, objects=args.objects,
                        warmup=args.warmup, sweep_objects=args.sweep_objects, sweep_sizes=args.sweep_sizes,
                        device=args.device, provider=args.provider, threads=args.threads, opt_level=args.ort_opt_level,
                        clip_seed=args.clip_seed, memory_trace=args.memory_trace, trace_every=args.trace_every,
                        plugin_libs=args.plugin_lib)
    result = run_benchmark(opts)
    table = format_markdown(result)
    print(table)
    for flag, path, text in (("--json", args.json, json.dumps(result, indent=2) + "\n"),
                             ("--markdown", args.markdown, table)):
        if path:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text)
            except OSError as exc:
                raise InputError(f"cannot write {flag} {path}: {exc}") from exc
            log.info("wrote %s", path)
    if args.plot and write_plot(result, args.plot):
        log.info("wrote %s", args.plot)
    bad = failed(result)
    if bad:
        log.error("backends that failed: %s (their errors are in the table)", ", ".join(bad))
        return 1
    return 0
