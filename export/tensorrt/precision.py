"""fp16 with fp32 islands, decided on the ONNX graph (imports onnx and numpy only; no TensorRT).

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

import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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


__all__ = ["FP16_MAX", "FP32_OP_TYPES", "FP32_TAILS", "FP32_WHOLE_GRAPH", "NEVER_FP16_OPS", "convert_to_mixed_fp16", "fp32_nodes"]
