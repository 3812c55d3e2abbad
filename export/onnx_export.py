"""Export S3 to six ONNX subgraphs plus manifest.json (DESIGN "Data flow"); with long-term
memory also lt_consolidate and lt_prune (runtime.contract.graph_names).

Each graph is a thin wrapper that calls the eager model's subgraph method (never a
re-implementation). Resolution and memory capacity are fixed per export; the object count N
and the number of active buckets NB are the only dynamic axes. Every export ends with a numeric
ONNX Runtime comparison against the PyTorch module.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from s3rt import __version__
from s3rt.configs import ModelConfig, get_config
from s3rt.errors import ConfigError, InternalError
from s3rt.export.model import S3Model, build_model
from s3rt.export.model.s3 import run_graph
from s3rt.inference_settings import resolve_inference_settings, weights_defaults
from s3rt.runtime.manifest import file_sha256
from s3rt.long_term_config import LongTermConfig
from s3rt.runtime.compare import TensorCheck, compare_tensors
from s3rt.runtime.contract import Geometry, GraphSpec, graph_names, graph_specs
from s3rt.runtime.manifest import Manifest
from s3rt.runtime.preprocess import FrameGeometry

log = logging.getLogger(__name__)

OPSET_RANGE = (17, 20)
# sizes used while tracing: >1 so the tracer never specialises a dynamic axis to a broadcast 1
TRACE_DIMS = {"N": 3, "NB": 2}


class SubgraphModule(nn.Module):
    """One exportable graph: positional inputs in contract order -> outputs in contract order."""

    def __init__(self, model: S3Model, graph: str, *, top_k: int, pos_embed: Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.graph = graph
        self.top_k = top_k
        if pos_embed is not None:
            self.register_buffer("pos_embed", pos_embed, persistent=False)
        else:
            self.pos_embed = None

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if self.graph == "encoder":
            return self.model.encoder(inputs[0], self.pos_embed)
        return run_graph(self.model, self.graph, list(inputs), top_k=self.top_k)


def _distinct(n: int, k: int, g: torch.Generator) -> Tensor:
    return torch.randperm(n, generator=g)[:k]


# index inputs of the long-term graphs: distinct and in range, like the tracker's; dims carries
# the static sizes they index into: Nc candidates, L long-term tokens
LONG_TERM_INDEX_INPUTS: dict[str, Callable[..., Tensor]] = {
    "candidate_index": lambda shape, dims, geo, g: _distinct(geo.slots * geo.tokens, shape[0], g),
    "prototype_index": lambda shape, dims, geo, g: _distinct(dims["Nc"], shape[0], g),
    "survivor_index": lambda shape, dims, geo, g: torch.stack([_distinct(dims["L"], shape[1], g)
                                                               for _ in range(shape[0])]),
}


def example_inputs(spec: GraphSpec, cfg: ModelConfig, geo: Geometry, dims: dict[str, int],
                   features: dict[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """Plausible inputs for tracing and parity: real features where given, valid state otherwise."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for t in spec.inputs:
        shape = t.concrete(**dims)
        if t.name in features and tuple(features[t.name].shape) == shape:
            out[t.name] = features[t.name]
        elif t.name == "bucket_valid":
            v = torch.rand(shape, generator=g) < 0.6
            v[:, 0] = True                                             # every bucket has its first frame
            out[t.name] = v
        elif t.name == "object_bucket":
            out[t.name] = torch.arange(shape[0]) % dims["NB"]
        elif t.name in LONG_TERM_INDEX_INPUTS:
            out[t.name] = LONG_TERM_INDEX_INPUTS[t.name](shape, dims, geo, g)
        elif t.name == "lt_valid":
            out[t.name] = torch.arange(shape[1]) < torch.randint(1, shape[1] + 1, (shape[0], 1), generator=g)
        elif t.name in ("mem_shrinkage", "lt_shrinkage"):
            out[t.name] = 1 + torch.rand(shape, generator=g) * 3
        elif t.name in ("prev_prob", "masks"):
            p = torch.rand(shape, generator=g)
            out[t.name] = p / (p.sum(dim=1, keepdim=True) + 0.2)
        elif t.name == "object_memory":
            m = torch.randn(shape, generator=g)
            m[..., -1] = torch.rand(shape[:-1], generator=g) * 50       # areas are non-negative
            out[t.name] = m
        elif t.name in ("selection", "mem_selection"):
            out[t.name] = torch.rand(shape, generator=g)
        else:
            out[t.name] = torch.randn(shape, generator=g)
    return out


@torch.no_grad()
def frame_features(model: S3Model, geo: Geometry, seed: int = 0) -> dict[str, Tensor]:
    """Run the two image graphs on a synthetic frame, for realistic example inputs."""
    from s3rt.runtime.io.synthetic import make_clip
    frames, _ = make_clip(1, geo.height, geo.width, seed=seed)
    specs = graph_specs(model.cfg, geo)
    feats = {"image": torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255}   # (1, 3, H, W) in [0, 1]
    for graph in ("encoder", "spatial_semantic"):
        ins = [feats[n] for n in specs[graph].input_names]
        outs = run_graph(model, graph, ins, top_k=1)
        feats.update(zip(specs[graph].output_names, outs))
    return feats


def onnx_dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for t in (*spec.inputs, *spec.outputs):
        named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if named:
            axes[t.name] = named
    return axes


PARITY_ATOL = 1e-3           # the export's parity tolerance (`s3rt validate --atol` overrides it there)


def compare_onnx(path: Path, module: nn.Module, inputs: dict[str, Tensor], spec: GraphSpec,
                 threads: int | None = None, atol: float = PARITY_ATOL) -> list[TensorCheck]:
    """Run the graph in ONNX Runtime (CPU) and the module in PyTorch on the same inputs; the module
    is the reference (s3rt.runtime.compare, |d| <= atol)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in inputs.items()}
    got = sess.run(spec.output_names, feed)
    with torch.no_grad():
        want = module(*inputs.values())
    return [compare_tensors(spec.name, name, a, b.numpy(), atol=atol)
            for name, a, b in zip(spec.output_names, got, want)]


def export_model(config: str | ModelConfig, *, out_dir: str | Path, height: int, width: int,
                 weights: str | Path | None = None, seed: int = 0, max_objects: int = 8,
                 memory_frames: int | None = None, max_buckets: int = 4, top_k: int | None = None,
                 mem_every: int | None = None,
                 opset: int = 17, model: S3Model | None = None, check_parity: bool = True,
                 fused_attention_node: bool = False, long_term: LongTermConfig | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[Manifest, list[TensorCheck]]:
    """Write the six graphs and manifest.json to `out_dir`; returns the manifest and the parity checks
    (one s3rt.runtime.compare.TensorCheck per graph output, truthy within PARITY_ATOL).

    fused_attention_node: emit DQ_CA's gather in query_attention as one custom node
    (s3rt::MaskedQueryGather) for the TensorRT plugin; ONNX Runtime cannot run that graph, so its
    parity check is replaced by a structure check. Default: standard ONNX ops only.
    long_term: long-term memory settings; the readout graph then reads [long-term | slots] and
    returns usage, and lt_consolidate / lt_prune are exported too (LONG_TERM_MEMORY.md §9.3).
    memory_frames / top_k / mem_every: None takes the model's defaults (config family, then what the
    weights carry); the settings used and their sources are recorded in the manifest.
    config "auto" (or None with weights) detects the config from the checkpoint.
    """
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ConfigError(f"opset {opset} not supported: choose {OPSET_RANGE[0]}..{OPSET_RANGE[1]} "
                          "(17+ for LayerNormalization; TensorRT's parser is checked up to 20)")
    if config in (None, "auto"):
        from s3rt.export.model.weights import detect_config
        config = detect_config(weights)
    cfg = get_config(config) if isinstance(config, str) else config
    effective = resolve_inference_settings(
        cfg, carried=[weights_defaults(weights)],
        overrides={"mem_every": mem_every, "max_mem_frames": memory_frames, "top_k": top_k,
                   "max_objects": max_objects, "max_buckets": max_buckets, "long_term": long_term})
    settings = effective.loop
    mem_every, memory_frames, top_k = settings.mem_every, settings.max_mem_frames, settings.top_k
    frame_geo = FrameGeometry.for_frame((height, width), None, pad_multiple=cfg.pad_multiple)
    geo = Geometry(height=frame_geo.padded_hw[0], width=frame_geo.padded_hw[1], slots=settings.memory_slots)
    if geo.tokens * geo.slots < top_k:
        raise ConfigError(f"memory capacity {geo.slots} slots x {geo.tokens} tokens < top_k {top_k}")
    if long_term is not None:
        long_term.check_tokens(geo.tokens, top_k)
    say = progress or (lambda msg: log.info(msg))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        say(f"building {cfg.name} ({'weights ' + str(weights) if weights else 'seeded random weights'})")
        model = build_model(cfg, weights=weights, seed=seed)
    say(f"inference defaults recorded in the manifest: {effective.describe()}")
    model = model.eval()
    specs = graph_specs(cfg, geo, settings)
    dims = dict(TRACE_DIMS)
    dims["N"] = min(dims["N"], max_objects)
    dims["NB"] = min(dims["NB"], max_buckets)
    if long_term is not None:        # static sizes the long-term index inputs point into
        dims.update(L=long_term.max_num_tokens, Nc=long_term.candidates(geo.tokens))
    names = graph_names(settings)
    features = frame_features(model, geo, seed)
    pos_embed = None
    if cfg.encoder == "vit_adapter":
        with torch.no_grad():
            pos_embed = model.pixel_encoder.interpolated_pos_embed(geo.h, geo.w).detach().clone()

    if fused_attention_node and not cfg.uses_fused_gather:
        raise ConfigError(f"--fused-attention-plugin is S3-only: the s3rt::MaskedQueryGather plugin implements DQ_CA, "
                          f"and {cfg.name} reads pixels with a standard masked attention (plain ONNX ops, no plugin "
                          "needed); export without the flag")
    if fused_attention_node:
        from s3rt.kernels.masked_query_attention.torch_op import register_onnx_symbolic
        register_onnx_symbolic(opset)
        model.use_fused_query_gather(True)
    files, parity = {}, []
    for i, name in enumerate(names, 1):
        spec = specs[name]
        say(f"[{i}/{len(names)}] exporting {name}")
        module = SubgraphModule(model, name, top_k=top_k, pos_embed=pos_embed if name == "encoder" else None).eval()
        inputs = example_inputs(spec, cfg, geo, dims, features, seed=i)
        path = out / f"{name}.onnx"
        with warnings.catch_warnings():
            # tracing a fixed resolution turns shapes into constants on purpose; say so once, here
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(module, tuple(inputs.values()), str(path), input_names=spec.input_names,
                              output_names=spec.output_names, dynamic_axes=onnx_dynamic_axes(spec),
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        _annotate_io(path, spec)
        _check_onnx(path)
        files[name] = path.name
        if fused_attention_node and name == "query_attention":
            _check_custom_node(path)
        elif check_parity:
            parity += compare_onnx(path, module, inputs, spec)
    if fused_attention_node:
        model.use_fused_query_gather(False)
    manifest = Manifest(root=out, model=cfg, settings=settings, height=height, width=width, geometry=geo,
                        opset=opset, checkpoint_sha256=file_sha256(weights) if weights else None,
                        graphs=specs, files=files, s3rt_version=__version__,
                        extra={"weights": "checkpoint" if weights else f"random(seed={seed})",
                               "inference_defaults": effective.to_dict(),
                               "custom_ops": ["s3rt::MaskedQueryGather"] if fused_attention_node else []})
    manifest.save()
    say(f"wrote {len(files)} graphs and manifest.json to {out}")
    return manifest, parity


def _check_custom_node(path: Path) -> None:
    """Structure check of the plugin graph, and shapes for the custom node's outputs (ONNX shape
    inference cannot see through a custom op): gathered (BN, Q, C), index (BN, heads, Q)."""
    import onnx
    from onnx import TensorProto, helper
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    nodes = [n for n in model.graph.node if n.domain == "s3rt"]
    if not nodes or any(n.op_type != "MaskedQueryGather" for n in nodes):
        raise InternalError(f"{path}: expected s3rt::MaskedQueryGather nodes, found {[n.op_type for n in nodes]}")
    shapes = {v.name: v.type.tensor_type for v in (*model.graph.value_info, *model.graph.input)}
    outs = {o for n in nodes for o in n.output}
    stale = [v for v in model.graph.value_info if v.name in outs]     # the tracer's invented/empty entries
    for v in stale:
        model.graph.value_info.remove(v)

    def dims(name: str) -> list:
        return [d.dim_param or d.dim_value for d in shapes[name].shape.dim]

    for node in nodes:
        heads = next(a.i for a in node.attribute if a.name == "num_heads")
        bn, _, c = dims(node.input[0])
        q = dims(node.input[1])[1]
        for out, elem, shape in ((node.output[0], shapes[node.input[0]].elem_type, [bn, q, c]),
                                 (node.output[1], TensorProto.INT32, [bn, heads, q])):
            model.graph.value_info.append(helper.make_tensor_value_info(out, elem, shape))
    onnx.save(model, str(path))


def _annotate_io(path: Path, spec: GraphSpec) -> None:
    """Write the contract's shapes onto the graph's inputs/outputs.

    The tracer leaves output dims it computed through Shape ops unnamed ("Reshape..._dim_2");
    the contract knows them (static sizes, N, NB, N+1), and parity is checked at several N.
    """
    import onnx
    model = onnx.load(str(path))
    by_name = {t.name: t for t in (*spec.inputs, *spec.outputs)}
    for value in (*model.graph.input, *model.graph.output):
        want = by_name[value.name].shape
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(want):
            raise InternalError(f"{spec.name}.{value.name}: rank {len(dims)} in ONNX, {len(want)} in the contract")
        for dim, size in zip(dims, want):
            if isinstance(size, int):
                dim.ClearField("dim_param")
                dim.dim_value = size
            else:
                dim.ClearField("dim_value")
                dim.dim_param = size
    onnx.save(model, str(path))


def _check_onnx(path: Path) -> None:
    import onnx
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
