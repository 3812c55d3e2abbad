"""Build TensorRT engines from an `s3rt export` folder (imports onnx and, lazily, tensorrt; no torch).

`build_engines(model_dir, precision=...)` parses each of the six ONNX graphs with TensorRT's
ONNX parser, adds one optimisation profile per graph for the dynamic axes (N objects: min 1,
opt min(2, max), max max_objects; NB buckets: 1, 1, max_buckets; "N+1" follows N), builds and
writes ``<out>/<graph>.engine`` plus ``<out>/engine_manifest.json`` (TensorRT version, GPU name,
compute capability, precision, ONNX sha256 per graph, s3rt version; default out:
MODEL_DIR/engines). The configuration is logged before each build, each build is timed, and an
optional timing cache is loaded, shared by the six builds, merged with the file under a lock
and saved.

Each graph goes through small steps, chained as Polygraphy chains its loaders (each takes the
previous one's result): `lint` (TensorRT's ONNX operator support) -> `add_deform_plugin` (surgery,
spatial_semantic with --deform-plugin) -> `keep_fp32_islands` (fp16) -> `parse` (TensorRT network)
-> `configure` (profile, flags, shared timing cache) -> `serialize` (the engine plan).

Precision
---------
fp32: strongly typed fp32 network with TF32 disabled, so engines match ONNX Runtime at
atol/rtol 1e-3. TF32 is on by default in TensorRT (Ampere and later, Jetson Orin included), so
it is cleared in every build: the fp32 islands of fp16 builds are meant as fp32, not TF32.
fp16 keeps the fp32 islands of `s3rt.export.tensorrt.precision` (the rules, and the ONNX-level
rewrite of fp16 mode "typed", the default and the only mode on TensorRT >= 11), or constrains
those layers inside TensorRT (mode "constraints", TensorRT <= 10.11 only).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from s3rt import __version__
from s3rt.errors import BackendError, ConfigError, ModelFormatError
from s3rt.export.tensorrt.lint import lint_onnx
from s3rt.export.tensorrt.precision import convert_to_mixed_fp16, fp32_nodes
from s3rt.optional import tensorrt
from s3rt.runtime.contract import GRAPH_ORDER
from s3rt.runtime.backends.tensorrt.engines import (PRECISIONS, EngineEntry, EngineManifest, Profile, file_sha256,
                                          optimization_profiles)
from s3rt.runtime.manifest import Manifest, load_manifest
from s3rt.runtime.backends.tensorrt.plugins import init_nvidia_plugins, library_version, load_plugin_libraries, \
    require_fused_plugin
from s3rt.runtime.backends.tensorrt.provenance import this_machine

log = logging.getLogger(__name__)

FP16_MODES = ("typed", "constraints")
CONSTRAINT_FLAGS = ("FP16", "OBEY_PRECISION_CONSTRAINTS")   # BuilderFlag members the "constraints" mode needs
DEFAULT_WORKSPACE_MIB = 2048


# -- building ----------------------------------------------------------------------------------------
def builder_flags(precision: str, fp16_mode: str, available: set[str] | frozenset[str]) -> tuple[list[str], list[str]]:
    """(flags to set, flags to clear) by BuilderFlag member name, given the names this TensorRT has.

    TF32 is cleared in every build where the flag exists (fp32 networks and the fp32 islands of
    fp16 ones must not run in TF32). "constraints" fp16 needs FP16 and OBEY_PRECISION_CONSTRAINTS,
    which TensorRT 11 no longer has: ConfigError then.
    """
    set_, clear = [], []
    if "TF32" in available:
        clear.append("TF32")
    if precision == "fp16" and fp16_mode == "constraints":
        missing = [f for f in CONSTRAINT_FLAGS if f not in available]
        if missing:
            raise ConfigError(f"fp16 mode 'constraints' needs BuilderFlag {', '.join(missing)}, which this TensorRT "
                              "no longer has (deprecated in 10.12, removed in 11); use --fp16-mode typed")
        set_ += list(CONSTRAINT_FLAGS)
    return set_, clear


def _flag_names(trt) -> frozenset[str]:
    return frozenset(n for n in dir(trt.BuilderFlag) if n.isupper())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on PATH.lock (POSIX); no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:      # pragma: no cover - Windows
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reporter(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: log.info(msg)


def _fmt_profile(profile: Profile) -> str:
    return "; ".join(f"{name} min {lo} opt {opt} max {hi}" for name, (lo, opt, hi) in profile.items()) or "static"


@dataclass
class GraphSource:
    """One graph on its way to TensorRT: the exported file, and what the rewriting steps made of it."""

    graph: str
    path: Path                                   # the export's ONNX file
    model: onnx.ModelProto | None = None         # set by a step that rewrote the graph
    keep_fp32: dict[str, str] = field(default_factory=dict)   # fp16: ONNX nodes kept fp32 -> rule

    def payload(self) -> bytes | Path:
        """What the parser reads: the rewritten graph, or the file as exported."""
        return self.model.SerializeToString() if self.model is not None else self.path

    def loaded(self) -> onnx.ModelProto:
        return self.model if self.model is not None else onnx.load(str(self.path))


def lint(src: GraphSource, max_opset: int) -> GraphSource:
    """Log what TensorRT's ONNX parser is known not to support (s3rt.export.tensorrt.lint)."""
    for problem in lint_onnx(src.path, max_opset=max_opset).problems:
        log.warning("%s: lint: %s", src.graph, problem)
    return src


def add_deform_plugin(src: GraphSource, out: Path, say: Callable[[str], None]) -> GraphSource:
    """Surgery: GridSample deformable attention -> MultiscaleDeformableAttnPlugin_TRT (kept in out/onnx_plugin/)."""
    from s3rt.export.tensorrt.surgery import use_trt_deform_plugin
    plugin_dir = out / "onnx_plugin"
    plugin_dir.mkdir(parents=True, exist_ok=True)
    model, sites = use_trt_deform_plugin(src.model if src.model is not None else src.path,
                                         plugin_dir / f"{src.graph}.onnx")
    say(f"{src.graph}: {sites} deformable-attention site(s) -> MultiscaleDeformableAttnPlugin_TRT")
    return replace(src, model=model)


def keep_fp32_islands(src: GraphSource, fp16_mode: str, out: Path) -> GraphSource:
    """fp16: choose the fp32 islands; mode "typed" also rewrites the graph (kept in out/onnx_fp16/)."""
    model = src.loaded()
    keep = fp32_nodes(model, src.graph)
    if fp16_mode != "typed":
        return replace(src, keep_fp32=keep)          # "constraints": layers are constrained in `configure`
    mixed = convert_to_mixed_fp16(model, keep)
    fp16_dir = out / "onnx_fp16"
    fp16_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(mixed, str(fp16_dir / f"{src.graph}.onnx"))
    return replace(src, model=mixed, keep_fp32=keep)


def parse(trt: Any, builder: Any, logger: Any, src: GraphSource, *, strongly_typed: bool) -> tuple[Any, Any]:
    """(network, parser): the parser owns weights the network refers to, so both are kept together."""
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    payload = src.payload()
    ok = parser.parse(payload) if isinstance(payload, bytes) else parser.parse_from_file(str(payload))
    if not ok:
        errors = [str(parser.get_error(e)) for e in range(parser.num_errors)]
        raise ModelFormatError(f"TensorRT {trt.__version__} cannot parse {src.path}: " + " | ".join(errors[:5])
                               + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))
    return network, parser


class SharedTimingCache:
    """One timing cache for every graph of a build: loaded from `path` (when given), attached to each
    builder config, merged with the file under a lock and saved at the end."""

    def __init__(self, path: Path | None, say: Callable[[str], None]) -> None:
        self.path, self.say = path, say
        self.cache = None
        self._bytes = b""
        if path is not None and path.is_file():
            with _file_lock(path):
                self._bytes = path.read_bytes()
            say(f"timing cache: loaded {len(self._bytes)} bytes from {path}")

    def attach(self, config: Any, graph: str) -> None:
        if self.cache is not None:
            if not config.set_timing_cache(self.cache, ignore_mismatch=False):
                raise BackendError(f"{graph}: TensorRT refused the timing cache it created itself for the previous graph")
            return
        self.cache = config.create_timing_cache(self._bytes)
        if not config.set_timing_cache(self.cache, ignore_mismatch=False):
            log.warning("timing cache %s does not match this TensorRT/GPU; building with an empty one (the file "
                        "is replaced on save)", self.path)
            self.cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(self.cache, ignore_mismatch=False):
                raise BackendError("TensorRT refused an empty timing cache; build without --timing-cache")

    def save(self, builder: Any) -> None:
        if self.path is not None and self.cache is not None:
            _save_timing_cache(self.cache, self.path, builder, self.say)


def configure(trt: Any, builder: Any, network: Any, src: GraphSource, profile_shapes: Profile, *,
              workspace_mib: int | None, flags: tuple[list[str], list[str]], timing: SharedTimingCache) -> tuple[Any, int]:
    """(builder config, number of layers constrained to fp32): workspace, optimisation profile, flags."""
    flags_on, flags_off = flags
    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile_shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    for flag in flags_off:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    for flag in flags_on:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    constrained = _constrain_layers(trt, network, src.keep_fp32) if "FP16" in flags_on else 0
    timing.attach(config, src.graph)
    return config, constrained


def serialize(builder: Any, network: Any, config: Any, graph: str) -> tuple[bytes, float]:
    """(engine plan, build seconds)."""
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise BackendError(f"TensorRT failed to build {graph} (see the TensorRT log above; try -v, a larger "
                           "--workspace, or precision fp32)")
    return bytes(plan), seconds


def build_engines(model_dir: str | Path, *, precision: str = "fp32", workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
                  timing_cache: str | Path | None = None, max_objects: int | None = None,
                  out_dir: str | Path | None = None, progress: bool | Callable[[str], None] = True,
                  fp16_mode: str = "typed", opt_objects: int = 2, device: int = 0,
                  graphs: tuple[str, ...] = GRAPH_ORDER, deform_plugin: bool = False,
                  verbose: bool = False, plugin_libs: tuple[str | Path, ...] | list[str | Path] = ()) -> EngineManifest:
    """Build one engine per graph of the export in `model_dir`; returns the written EngineManifest.

    precision: "fp32" or "fp16" (see module docstring for the fp32 islands). workspace_mib:
    builder workspace limit (None: TensorRT's default, all device memory). timing_cache: file to
    load, extend and save. max_objects: lower the N profile's max below the export's capacity.
    out_dir: default MODEL_DIR/engines. fp16_mode: "typed" or "constraints". deform_plugin: build
    spatial_semantic with TensorRT's MultiscaleDeformableAttnPlugin_TRT in place of the GridSample
    deformable sampling (s3rt.export.tensorrt.surgery; the rewritten ONNX is kept in <out>/onnx_plugin/).
    plugin_libs: plugin libraries (build/libs3rt_trt_plugins.so for exports made with
    --fused-attention-plugin) loaded into TensorRT's registry before parsing; their paths and
    sha256 go into the engine manifest.
    Needs TensorRT and an NVIDIA GPU (engines are built on the machine that will run them).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if fp16_mode not in FP16_MODES:
        raise ConfigError(f"unknown fp16 mode '{fp16_mode}'; choose one of {', '.join(FP16_MODES)}")
    if workspace_mib is not None and workspace_mib < 1:
        raise ConfigError(f"--workspace must be >= 1 MiB, got {workspace_mib}")
    unknown = [g for g in graphs if g not in GRAPH_ORDER]
    if unknown:
        raise ConfigError(f"unknown graphs {unknown}; graphs: {', '.join(GRAPH_ORDER)}")
    manifest = load_manifest(model_dir)
    require_fused_plugin(manifest.extra, plugin_libs)
    profiles = optimization_profiles(manifest, max_objects=max_objects, opt_objects=opt_objects)
    out = Path(out_dir) if out_dir is not None else manifest.root / "engines"
    say = _reporter(progress)

    trt = tensorrt.load()
    machine = this_machine(device, trt=trt)
    flags = builder_flags(precision, fp16_mode, _flag_names(trt))
    trt_version = library_version(trt)
    say(f"s3rt build: {manifest.model.name} {manifest.geometry.height}x{manifest.geometry.width}, precision "
        f"{precision}{f' ({fp16_mode})' if precision == 'fp16' else ''}, workspace "
        f"{workspace_mib if workspace_mib else 'default'} MiB, max_objects "
        f"{max_objects or manifest.settings.max_objects}, {machine.describe()} -> {out}")

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    init_nvidia_plugins(trt, logger)
    plugins = load_plugin_libraries(trt, list(plugin_libs))
    builder = trt.Builder(logger)
    timing = SharedTimingCache(Path(timing_cache) if timing_cache is not None else None, say)
    out.mkdir(parents=True, exist_ok=True)

    entries: dict[str, EngineEntry] = {}
    islands: dict[str, list[str]] = {}
    for i, graph in enumerate(graphs, 1):
        step = lambda msg: say(f"[{i}/{len(graphs)}] {msg}")   # noqa: E731 - progress prefix of this graph
        src = lint(GraphSource(graph, manifest.path(graph)), max_opset=max(20, manifest.opset))
        if deform_plugin and graph == "spatial_semantic":
            src = add_deform_plugin(src, out, step)
        if precision == "fp16":
            src = keep_fp32_islands(src, fp16_mode, out)
            islands[graph] = sorted(src.keep_fp32)
        network, parser = parse(trt, builder, logger, src,
                                strongly_typed=precision == "fp32" or fp16_mode == "typed")
        profile_shapes = profiles[graph]
        _check_network_inputs(network, profile_shapes, graph)
        config, constrained = configure(trt, builder, network, src, profile_shapes, workspace_mib=workspace_mib,
                                        flags=flags, timing=timing)
        step(f"{graph}: {network.num_layers} layers, profile {_fmt_profile(profile_shapes)}"
             + (f", {len(src.keep_fp32)} ONNX nodes kept fp32" if precision == "fp16" else "")
             + (f" ({constrained} layers constrained)" if constrained else ""))
        plan, seconds = serialize(builder, network, config, graph)
        del parser                                             # the plan holds the weights now
        engine_file = f"{graph}.engine"
        (out / engine_file).write_bytes(plan)
        step(f"{graph}: built in {seconds:.1f} s, {len(plan) / 2**20:.1f} MiB")
        entries[graph] = EngineEntry(file=engine_file, onnx_file=manifest.files[graph],
                                     onnx_sha256=file_sha256(manifest.path(graph)), build_seconds=round(seconds, 2),
                                     profile={k: [list(s) for s in v] for k, v in profile_shapes.items()})
    timing.save(builder)

    entries = {**_previous_entries(out, graphs), **entries}
    result = EngineManifest(
        root=out, tensorrt_version=trt_version, gpu_name=machine.gpu_name,
        compute_capability=machine.compute_capability, precision=precision, engines=entries, s3rt_version=__version__,
        fp16_mode=fp16_mode if precision == "fp16" else None, workspace_mib=workspace_mib,
        max_objects=max_objects or manifest.settings.max_objects, max_buckets=manifest.settings.max_buckets,
        cuda_runtime=machine.cuda_runtime, model_dir=str(manifest.root), fp32_layers=islands,
        plugins=[p.to_json() for p in plugins], bindings_version=str(trt.__version__),
        extra={"deform_plugin": bool(deform_plugin)})
    path = result.save()
    say(f"wrote {len(entries)} engines and {path}")
    return result


def _previous_entries(out: Path, graphs: tuple[str, ...]) -> dict[str, EngineEntry]:
    """Engines of graphs not rebuilt this time (partial rebuilds with `graphs=`)."""
    if set(graphs) == set(GRAPH_ORDER):
        return {}
    from s3rt.runtime.backends.tensorrt.engines import load_engine_manifest
    try:
        old = load_engine_manifest(out, check_files=True)
    except ModelFormatError:
        return {}
    return {g: e for g, e in old.engines.items() if g not in graphs}


def _check_network_inputs(network, profile: Profile, graph: str) -> None:
    for idx in range(network.num_inputs):
        tensor = network.get_input(idx)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape) and tensor.name not in profile:
            raise ModelFormatError(f"{graph}: network input '{tensor.name}' has dynamic shape {shape} but the manifest "
                                   "declares no dynamic axis for it; re-export the model")
        if tensor.name in profile:
            lo = profile[tensor.name][0]
            if len(lo) != len(shape) or any(d >= 0 and d != m for d, m in zip(shape, lo)):
                raise ModelFormatError(f"{graph}: network input '{tensor.name}' {shape} does not fit the manifest's "
                                       f"shape (min {lo}); re-export the model")


def _constrain_layers(trt, network, keep: dict[str, str]) -> int:
    """"constraints" fp16: force fp32 on layers named after kept nodes, and TopK/normalisation layers."""
    names = set(keep)
    by_type = {getattr(trt.LayerType, t) for t in ("TOPK", "NORMALIZATION") if hasattr(trt.LayerType, t)}
    count = 0
    for idx in range(network.num_layers):
        layer = network.get_layer(idx)
        base = layer.name.rsplit("_", 1)[0] if re.search(r"_\d+$", layer.name) else layer.name
        if layer.name in names or base in names or layer.type in by_type:
            layer.precision = trt.float32
            for o in range(layer.num_outputs):
                if layer.get_output(o).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(o, trt.float32)
            count += 1
    return count


def _save_timing_cache(cache, path: Path, builder, say: Callable[[str], None]) -> None:
    """Merge the cache on disk into `cache` if it matches this TensorRT/GPU, then write `cache` there.

    Merging uses ignore_mismatch=False: entries made by another device are never pulled in. A
    foreign or unreadable cache on disk is replaced (with a warning), never mixed in.
    """
    with _file_lock(path):
        if path.is_file():
            config = builder.create_builder_config()
            try:
                previous = config.create_timing_cache(path.read_bytes())
                if not cache.combine(previous, ignore_mismatch=False):
                    log.warning("timing cache %s was made by another TensorRT version or GPU: not merged, replaced "
                                "by this build's", path)
            except Exception as exc:  # noqa: BLE001 - a corrupt cache must not lose the new one
                log.warning("replacing unreadable timing cache %s: %s", path, exc)
        data = bytes(cache.serialize())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    say(f"timing cache: saved {len(data)} bytes to {path}")


__all__ = ["CONSTRAINT_FLAGS", "DEFAULT_WORKSPACE_MIB", "FP16_MODES", "GraphSource", "Manifest", "SharedTimingCache",
           "add_deform_plugin", "build_engines", "builder_flags", "configure", "keep_fp32_islands", "lint", "parse",
           "serialize"]
