"""Build TensorRT engines from an `s3rt export` folder (imports onnx and, lazily, tensorrt; no torch).

`build_engines(model_dir, precision=...)` parses each of the six ONNX graphs with TensorRT's
ONNX parser, adds one optimisation profile per graph for the dynamic axes (N objects: min 1,
opt min(2, max), max max_objects; NB buckets: 1, 1, max_buckets; "N+1" follows N), builds and
writes ``<out>/<graph>.engine`` plus ``<out>/engine_manifest.json`` (TensorRT version, GPU name,
compute capability, precision, ONNX sha256 per graph, s3rt version; default out:
MODEL_DIR/engines). The configuration is logged before each build, each build is timed, and an
optional timing cache is loaded, shared by the six builds, merged with the file under a lock
and saved.

Precision
---------
fp32: strongly typed fp32 network with TF32 disabled, so engines match ONNX Runtime at
atol/rtol 1e-3. TF32 is on by default in TensorRT (Ampere and later, Jetson Orin included), so
it is cleared in every build: the fp32 islands of fp16 builds are meant as fp32, not TF32.

fp16 keeps numerically sensitive parts in fp32 (DESIGN "Precision"). Which ONNX nodes stay fp32
is decided by `fp32_nodes(model, graph)` from these rules (data below, `FP32_*`):

1. every graph: normalisation statistics — LayerNormalization, Group/Instance/RMS/Lp
   normalisation, ReduceMean, Pow, Sqrt, Reciprocal, ReduceL2, and any node under a module
   scope whose name contains "norm" (decomposed norms);
2. every graph: TopK;
3. memory_readout: every node except convolutions (affinity MatMul, the -inf bucket mask, TopK,
   the top-k softmax and the gather readout);
4. output tails, i.e. every node on a path to the output after its last Conv/MatMul/Gemm:
   spatial_semantic key, shrinkage, selection (the affinity's inputs); mask_decoder probs (the
   soft aggregation: Sigmoid, ReduceProd, Clip, Log, Resize, Softmax) and new_sensory (the
   sensory update: Sigmoid/Tanh gates, Mul/Sub/Add); mask_encoder new_sensory and summaries
   (object summariser). The heavy layers (convolutions, attention matmuls) run in fp16.

Two ways to apply them (`fp16_mode`):
- "typed" (default; the only way on TensorRT >= 11, where weakly typed networks are gone):
  `convert_to_mixed_fp16` rewrites the ONNX graph — fp16 initializers and Cast nodes at the
  island borders, fp32 graph inputs/outputs — and the network is built STRONGLY_TYPED. The
  rewritten graphs are written to <out>/onnx_fp16/ for inspection.
- "constraints" (TensorRT <= 10.11 only: BuilderFlag.FP16, OBEY_PRECISION_CONSTRAINTS,
  ILayer.precision and set_output_type are deprecated from 10.12 and gone in 11.x; refused where
  the flags are missing): BuilderFlag.FP16 plus per-layer `precision = float32` and
  `set_output_type(float32)` on the layers whose names match the island nodes (the ONNX parser
  names layers after their nodes; extra layers of one node get a "_N" suffix) and on TopK and
  normalisation layers by type, with BuilderFlag.OBEY_PRECISION_CONSTRAINTS.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from s3rt import __version__
from s3rt.errors import BackendError, ConfigError, ModelFormatError
from s3rt.export.tensorrt.lint import lint_onnx
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

# -- fp32 islands (data) ---------------------------------------------------------------------------
FP32_OP_TYPES = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization", "LpNormalization",
    "ReduceMean", "Pow", "Sqrt", "Reciprocal", "ReduceL2", "TopK",
})
FP32_SCOPE = re.compile(r"(?:^|/)[^/]*norm[^/]*/", re.IGNORECASE)     # "/blocks.0/norm1/Sub" -> fp32
FP32_WHOLE_GRAPH = {"memory_readout": frozenset({"Conv", "ConvTranspose"})}   # graph -> ops still fp16
FP32_TAILS = {
    "spatial_semantic": ("key", "shrinkage", "selection"),
    "memory_readout": ("pixel_readout",),
    "mask_decoder": ("probs", "new_sensory"),
    "mask_encoder": ("new_sensory", "summaries"),
}
TAIL_STOP_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum"})
# ops never rewritten to fp16 (their float outputs are typed by attributes, or they compute shapes)
NEVER_FP16_OPS = frozenset({
    "Cast", "CastLike", "Shape", "Size", "Constant", "ConstantOfShape", "Range", "EyeLike", "RandomNormal",
    "RandomUniform", "RandomNormalLike", "RandomUniformLike", "NonZero", "If", "Loop", "Scan",
})
FP16_PLUGINS = frozenset({"MultiscaleDeformableAttnPlugin_TRT"})   # custom ops that accept half inputs
FP32_PARAM_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}           # roi/scales stay float32
FP16_MAX = 65504.0


def _ensure_node_names(model: onnx.ModelProto) -> None:
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _scope(node: onnx.NodeProto) -> str:
    """Node name plus exporter scope metadata (dynamo exports keep module paths there)."""
    meta = " ".join(p.value for p in node.metadata_props if "scope" in p.key or "namespace" in p.key)
    return f"{node.name} {meta}"


def fp32_nodes(model: onnx.ModelProto, graph: str) -> dict[str, str]:
    """Names of the nodes of `graph` that stay fp32 in an fp16 build -> the rule that keeps them."""
    _ensure_node_names(model)
    nodes = list(model.graph.node)
    keep: dict[str, str] = {}
    whole = FP32_WHOLE_GRAPH.get(graph)
    for node in nodes:
        if whole is not None and node.op_type not in whole:
            keep[node.name] = f"{graph}: whole graph fp32 except {', '.join(sorted(whole))}"
        elif node.op_type in FP32_OP_TYPES:
            keep[node.name] = f"op {node.op_type}"
        elif FP32_SCOPE.search(_scope(node)):
            keep[node.name] = "normalisation scope"
    producers = {o: n for n in nodes for o in n.output}
    for out in FP32_TAILS.get(graph, ()):
        stack, seen = [out], set()
        while stack:
            name = stack.pop()
            node = producers.get(name)
            if node is None or node.name in seen or node.op_type in TAIL_STOP_OPS:
                continue
            seen.add(node.name)
            keep.setdefault(node.name, f"tail of output {out}")
            stack.extend(i for i in node.input if i)
    types = _elem_types(model)
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16}
    computes_float = {n.name for n in nodes if any(types.get(t) in floats for t in (*n.input, *n.output) if t)}
    return {name: why for name, why in keep.items() if name in computes_float}


# -- ONNX-level mixed precision ("typed" fp16) ----------------------------------------------------
def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to what the file declares
        inferred = model
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.output, *g.value_info)
             if vi.type.HasField("tensor_type")}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
                elif a.name in ("value_float", "value_floats"):
                    types[node.output[0]] = TensorProto.FLOAT
    return types


def convert_to_mixed_fp16(model: onnx.ModelProto, keep_fp32: set[str] | dict[str, str]) -> onnx.ModelProto:
    """A copy of `model` computing in fp16 except the nodes named in `keep_fp32`.

    Float initializers read by fp16 nodes get fp16 copies (clipped to +-65504); Cast nodes are
    inserted where a tensor crosses an fp16/fp32 border; graph inputs and outputs stay float32
    (the runtime's buffers are float32). Nodes in NEVER_FP16_OPS, custom-domain nodes (except
    FP16_PLUGINS) and nodes with subgraphs keep their types.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _ensure_node_names(out)
    g = out.graph
    types = _elem_types(out)
    keep = set(keep_fp32)
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}

    def is_half_node(node: onnx.NodeProto) -> bool:
        if node.name in keep or node.op_type in NEVER_FP16_OPS:
            return False
        if node.domain not in ("", "ai.onnx") and node.op_type not in FP16_PLUGINS:
            return False
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return False
        return any(types.get(t) == TensorProto.FLOAT for t in (*node.input, *node.output) if t)

    half = {n.name for n in g.node if is_half_node(n)}
    # graph outputs produced in fp16: the node writes NAME__fp16, a final Cast writes NAME
    renamed = {}
    for node in g.node:
        if node.name in half:
            for i, o in enumerate(node.output):
                if o in graph_outputs and types.get(o) == TensorProto.FLOAT:
                    renamed[o] = f"{o}__fp16"
                    node.output[i] = renamed[o]
    for node in g.node:
        for i, inp in enumerate(node.input):
            if inp in renamed:
                node.input[i] = renamed[inp]

    dtype = dict(types)
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def as_type(name: str, to: int) -> str:
        if dtype.get(name) == to:
            return name
        if to == TensorProto.FLOAT16 and name in inits:
            if name not in half_inits:
                arr = numpy_helper.to_array(inits[name]).astype(np.float32)
                arr = np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)
                half_inits[name] = f"{name}__fp16"
                g.initializer.append(numpy_helper.from_array(arr, half_inits[name]))
                dtype[half_inits[name]] = TensorProto.FLOAT16
            return half_inits[name]
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == TensorProto.FLOAT16 else "fp32"
            casts[key] = f"{name}__to_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"{name}__cast_{suffix}"))
            dtype[casts[key]] = to
        return casts[key]

    for node in list(g.node):
        if node.name in half:
            params = FP32_PARAM_INPUTS.get(node.op_type, ())
            for i, inp in enumerate(node.input):
                if inp and i not in params and dtype.get(inp) == TensorProto.FLOAT:
                    node.input[i] = as_type(inp, TensorProto.FLOAT16)
            for o in node.output:
                base = next((k for k, v in renamed.items() if v == o), o)
                if o and types.get(base) == TensorProto.FLOAT:
                    dtype[o] = TensorProto.FLOAT16
        else:
            for i, inp in enumerate(node.input):
                if inp and dtype.get(inp) == TensorProto.FLOAT16:
                    node.input[i] = as_type(inp, TensorProto.FLOAT)
        new_nodes.append(node)
    for orig, tmp in renamed.items():
        new_nodes.append(helper.make_node("Cast", [tmp], [orig], to=TensorProto.FLOAT, name=f"{orig}__cast_fp32"))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]
    # initializers no longer read in fp32 can go
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept_inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    return out


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
    flags_on, flags_off = builder_flags(precision, fp16_mode, _flag_names(trt))
    trt_version = library_version(trt)
    say(f"s3rt build: {manifest.model.name} {manifest.geometry.height}x{manifest.geometry.width}, precision "
        f"{precision}{f' ({fp16_mode})' if precision == 'fp16' else ''}, workspace "
        f"{workspace_mib if workspace_mib else 'default'} MiB, max_objects "
        f"{max_objects or manifest.settings.max_objects}, {machine.describe()} -> {out}")

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    init_nvidia_plugins(trt, logger)
    plugins = load_plugin_libraries(trt, list(plugin_libs))
    builder = trt.Builder(logger)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    cache_bytes = b""
    if cache_path is not None and cache_path.is_file():
        with _file_lock(cache_path):
            cache_bytes = cache_path.read_bytes()
        say(f"timing cache: loaded {len(cache_bytes)} bytes from {cache_path}")
    shared_cache = None
    out.mkdir(parents=True, exist_ok=True)

    entries: dict[str, EngineEntry] = {}
    islands: dict[str, list[str]] = {}
    for i, graph in enumerate(graphs, 1):
        onnx_path = manifest.path(graph)
        report = lint_onnx(onnx_path, max_opset=max(20, manifest.opset))
        for problem in report.problems:
            log.warning("%s: lint: %s", graph, problem)
        network_flags = 0
        source: bytes | Path = onnx_path
        keep: dict[str, str] = {}
        model = None
        if deform_plugin and graph == "spatial_semantic":
            from s3rt.export.tensorrt.surgery import use_trt_deform_plugin
            plugin_dir = out / "onnx_plugin"
            plugin_dir.mkdir(parents=True, exist_ok=True)
            model, sites = use_trt_deform_plugin(onnx_path, plugin_dir / f"{graph}.onnx")
            say(f"[{i}/{len(graphs)}] {graph}: {sites} deformable-attention site(s) -> MultiscaleDeformableAttnPlugin_TRT")
            source = model.SerializeToString()
        if precision == "fp16":
            model = model if model is not None else onnx.load(str(onnx_path))
            keep = fp32_nodes(model, graph)
            islands[graph] = sorted(keep)
            if fp16_mode == "typed":
                mixed = convert_to_mixed_fp16(model, keep)
                fp16_dir = out / "onnx_fp16"
                fp16_dir.mkdir(parents=True, exist_ok=True)
                onnx.save(mixed, str(fp16_dir / f"{graph}.onnx"))
                source = mixed.SerializeToString()
        if precision == "fp32" or fp16_mode == "typed":
            network_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(network_flags)
        parser = trt.OnnxParser(network, logger)
        ok = parser.parse(source) if isinstance(source, bytes) else parser.parse_from_file(str(source))
        if not ok:
            errors = [str(parser.get_error(e)) for e in range(parser.num_errors)]
            raise ModelFormatError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: " + " | ".join(errors[:5])
                                   + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))
        profile_shapes = profiles[graph]
        _check_network_inputs(network, profile_shapes, graph)

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
        constrained = _constrain_layers(trt, network, keep) if "FP16" in flags_on else 0
        if shared_cache is None:
            shared_cache = config.create_timing_cache(cache_bytes)
            if not config.set_timing_cache(shared_cache, ignore_mismatch=False):
                log.warning("timing cache %s does not match this TensorRT/GPU; building with an empty one (the file "
                            "is replaced on save)", cache_path)
                cache_bytes = b""
                shared_cache = config.create_timing_cache(b"")
                if not config.set_timing_cache(shared_cache, ignore_mismatch=False):
                    raise BackendError("TensorRT refused an empty timing cache; build without --timing-cache")
        elif not config.set_timing_cache(shared_cache, ignore_mismatch=False):
            raise BackendError(f"{graph}: TensorRT refused the timing cache it created itself for the previous graph")

        say(f"[{i}/{len(graphs)}] {graph}: {network.num_layers} layers, profile {_fmt_profile(profile_shapes)}"
            + (f", {len(keep)} ONNX nodes kept fp32" if precision == "fp16" else "")
            + (f" ({constrained} layers constrained)" if constrained else ""))
        start = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if plan is None:
            raise BackendError(f"TensorRT failed to build {graph} (see the TensorRT log above; try -v, a larger "
                               "--workspace, or precision fp32)")
        engine_file = f"{graph}.engine"
        (out / engine_file).write_bytes(bytes(plan))
        say(f"[{i}/{len(graphs)}] {graph}: built in {seconds:.1f} s, {len(bytes(plan)) / 2**20:.1f} MiB")
        entries[graph] = EngineEntry(file=engine_file, onnx_file=manifest.files[graph],
                                     onnx_sha256=file_sha256(onnx_path), build_seconds=round(seconds, 2),
                                     profile={k: [list(s) for s in v] for k, v in profile_shapes.items()})

    if cache_path is not None and shared_cache is not None:
        _save_timing_cache(shared_cache, cache_path, builder, say)

    previous = _previous_entries(out, graphs)
    entries = {**previous, **entries}
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


__all__ = ["CONSTRAINT_FLAGS", "DEFAULT_WORKSPACE_MIB", "FP16_MODES", "builder_flags", "FP32_OP_TYPES", "FP32_TAILS", "FP32_WHOLE_GRAPH", "Manifest",
           "build_engines", "convert_to_mixed_fp16", "fp32_nodes"]
