"""Argument groups shared by subcommands, so each flag is spelled one way everywhere."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from s3rt.configs import InferenceConfig, list_configs

if TYPE_CHECKING:
    from s3rt.runtime.backends.base import Backend
    from s3rt.runtime.tracker import Tracker

log = logging.getLogger("s3rt.cli")


def add_model_args(p: argparse.ArgumentParser, *, graphs: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--config", choices=[*list_configs(), "auto"], help="model variant for the torch backend / export "
                   "(s3-base = ViT-B adapter, s3-r50 = ResNet-50, cutie-small / cutie-base = Cutie, tiny* = small "
                   "test configs); 'auto', the default with --weights, detects it from the checkpoint")
    g.add_argument("--weights", metavar="W", help="checkpoint (.pth) in the reference layout; without it, seeded "
                   "random weights are used and the masks are meaningless")
    g.add_argument("--seed", type=int, default=0, help="seed for random weights (default 0)")
    if graphs:
        g.add_argument("--model", metavar="DIR", help="folder written by 's3rt export' (onnxruntime/tensorrt backends)")


def add_backend_args(p: argparse.ArgumentParser, *, default: str = "torch") -> None:
    g = p.add_argument_group("backend")
    from s3rt.runtime.backends.registry import BACKENDS
    g.add_argument("--backend", default=default, choices=BACKENDS,
                   help=f"what runs the graphs (default {default})")
    g.add_argument("--device", default="cpu", help="torch device: cpu or cuda[:i] (default cpu)")
    g.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"),
                   help="ONNX Runtime execution provider (default: cpu, or cuda with --device cuda)")
    g.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    g.add_argument("--ort-host-buffers", action="store_true",
                   help="ONNX Runtime cuda/tensorrt providers: keep the tracker's state in host memory instead of "
                        "on the GPU (needs no cuda-bindings, but every graph call copies the memory bank)")
    g.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                   help="torch: autocast dtype with fp32 islands (default fp32); tensorrt: the engines' precision "
                        "to load (default: whatever 's3rt build' produced)")


def add_loop_args(p: argparse.ArgumentParser) -> None:
    d = InferenceConfig()
    g = p.add_argument_group("streaming settings (default: the model's own; s3rt.inference_settings)",
                             "Unset options take the model's defaults: the export manifest's, what the weights carry "
                             "(<stem>.inference.json), else the family's evaluation defaults (the DAVIS reference "
                             "run: the numbers below). The run logs each value and where it came from")
    g.add_argument("--mem-every", type=int, help=f"memory frame every N frames ({d.mem_every})")
    g.add_argument("--max-mem-frames", type=int,
                   help=f"memory frames per object group incl. the permanent first frame ({d.max_mem_frames})")
    g.add_argument("--top-k", type=int, help=f"memory readout top-k ({d.top_k})")
    g.add_argument("--max-objects", type=int, help=f"object capacity ({d.max_objects})")
    g.add_argument("--max-buckets", type=int, help=f"distinct frames on which objects may first appear ({d.max_buckets})")
    g.add_argument("--size", type=int, help="shrink frames so the shorter side is at most this, antialiased "
                   "(reference reader: 480); 0 keeps the native size. Outputs are always at the frame's own size")
    g.add_argument("--max-internal-size", type=int, metavar="S",
                   help="Cutie's internal resize instead of --size: a frame whose shorter side m exceeds S is "
                        "resized to (int(H/m*S), int(W/m*S)), bilinear without antialias, and the masks are "
                        "resized back (Cutie's GUI/video default 480; evaluation: off = -1). Torch backend")
    add_long_term_args(p)


def add_long_term_args(p: argparse.ArgumentParser) -> None:
    """--long-term and its --lt-* settings (LONG_TERM_MEMORY.md §2, §8); off by default."""
    from s3rt.long_term_config import PRESETS
    g = p.add_argument_group("long-term memory (off by default; for streams longer than a few hundred frames)")
    g.add_argument("--long-term", action="store_true",
                   help="consolidate old memory frames into usage-chosen prototypes and prune them by usage "
                        "(Cutie/S3 long-term memory); default preset: cutie")
    g.add_argument("--lt-preset", choices=tuple(PRESETS),
                   help="long_term block of the reference configs: cutie (10/5/128/10000/2000), s3 (S3 committed "
                        "eval_config: 25/15/128/30000/3000), small (spec 8.3 test setting: 4/2/16/80/32); "
                        "implies --long-term; the --lt-* options below override single fields")
    g.add_argument("--lt-max-mem-frames", type=int, metavar="F",
                   help="memory frames (incl. the permanent one) that trigger a consolidation")
    g.add_argument("--lt-min-mem-frames", type=int, metavar="F",
                   help="memory frames (incl. the permanent one) kept after a consolidation (>= 1)")
    g.add_argument("--lt-prototypes", type=int, metavar="P", help="prototypes made per consolidation")
    g.add_argument("--lt-max-tokens", type=int, metavar="L", help="long-term tokens per object group (capacity)")
    g.add_argument("--lt-buffer-tokens", type=int, metavar="B",
                   help="pruning keeps lt-max-tokens - lt-prototypes - lt-buffer-tokens tokens")
    g.add_argument("--lt-count-usage", choices=("true", "false"),
                   help="count long-term usage (must be true: pruning keeps the most used tokens; the "
                        "reference crashes without it, spec 11 B1)")


def long_term_settings(args: argparse.Namespace):  # noqa: ANN201 - LongTermConfig | None
    """The LongTermConfig the --long-term/--lt-* options ask for, or None (FIFO memory only)."""
    from s3rt.errors import ConfigError
    from s3rt.long_term_config import long_term_from
    fields = {"max_mem_frames": args.lt_max_mem_frames, "min_mem_frames": args.lt_min_mem_frames,
              "num_prototypes": args.lt_prototypes, "max_num_tokens": args.lt_max_tokens,
              "buffer_tokens": args.lt_buffer_tokens,
              "count_usage": None if args.lt_count_usage is None else args.lt_count_usage == "true"}
    if not (args.long_term or args.lt_preset):
        given = [k for k, v in fields.items() if v is not None]
        if given:
            raise ConfigError(f"long-term options ({', '.join(given)}) given without --long-term or --lt-preset")
        return None
    return long_term_from(args.lt_preset, **fields)


def loop_settings(args: argparse.Namespace) -> InferenceConfig:
    """The loop settings the options ask for, on S3's defaults (no model known)."""
    return effective_settings(args, None).loop


def effective_settings(args: argparse.Namespace, backend):  # noqa: ANN001, ANN201 - Backend -> EffectiveSettings
    """The settings a command runs with: the model's defaults (backend), overridden by the options given."""
    from s3rt.inference_settings import resolve_inference_settings
    overrides = {k: getattr(args, k, None) for k in ("mem_every", "max_mem_frames", "top_k", "max_objects",
                                                     "max_buckets", "size", "max_internal_size")}
    overrides["long_term"] = long_term_settings(args)
    if backend is None:
        return resolve_inference_settings(None, overrides=overrides)
    return resolve_inference_settings(backend.model_config, carried=backend.carried_defaults(),
                                      capacity=backend.capacity, overrides=overrides)


def add_plugin_lib(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--plugin-lib, shared by build, run, validate and bench."""
    p.add_argument("--plugin-lib", action="append", default=[], metavar="SO",
                   help="TensorRT plugin library to load before parsing/deserializing (repeatable), e.g. "
                        "build/libs3rt_trt_plugins.so for exports made with --fused-attention-plugin; engines "
                        "record its sha256 and refuse another")


def add_verbose(p: argparse.ArgumentParser) -> None:
    """-v/--verbose, read by s3rt.cli.main (log level, tracebacks) for every subcommand."""
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging; full tracebacks on errors")


def backend_from_args(args: argparse.Namespace) -> "tuple[Backend, list[str]]":
    """The (unopened) backend the model and backend argument groups ask for, and notes for the
    run's report (a torch model on random weights). Every command that takes these groups
    builds its backend here, through the registry's one builder."""
    from s3rt.runtime.backends.registry import BackendRequest, build_backend
    backend = build_backend(BackendRequest(
        args.backend, config=args.config, weights=args.weights, seed=args.seed, model_dir=args.model,
        device=args.device, provider=args.provider, threads=args.threads, precision=args.precision,
        plugin_libs=tuple(args.plugin_lib), host_buffers=args.ort_host_buffers))
    notes = []
    if args.backend == "torch" and args.weights is None:
        msg = ("no --weights given: running on seeded random weights, so the masks are meaningless "
               "(useful only to test the pipeline and measure speed)")
        log.warning(msg)
        notes.append(msg)
    return backend, notes


def tracker_factory_from_args(args: argparse.Namespace, backend: "Backend") -> "Callable[[], Tracker]":
    """New trackers on `backend` with the model's inference defaults (family < weights < export
    manifest) overridden by the flags given; logs each setting with where it came from. Exported
    graphs refuse long-term settings other than their export's (Backend.tracker_settings)."""
    from s3rt.runtime.tracker import Tracker
    effective = effective_settings(args, backend)
    log.info("inference settings: %s", effective.describe())
    if long_term_settings(args) is not None:
        backend.tracker_settings(effective.loop)
    return lambda: Tracker(backend, effective.loop, max_short_side=effective.size,
                           max_internal_size=effective.max_internal_size)
