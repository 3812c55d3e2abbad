"""Check an ONNX graph against TensorRT's ONNX parser before building (imports onnx only, no torch).

`lint_onnx(path_or_model)` reports what would make `s3rt build` fail or produce an engine the
runtime cannot drive with preallocated buffers:

- operators outside TensorRT's parser support list (data below), or outside an allowed custom
  domain (TensorRT plugins are imported by op name from the "trt" domain, s3rt's own from "s3rt");
- a default-domain opset above `max_opset` (or below the parser's minimum);
- graph inputs/outputs with a dimension that is neither static nor one of the declared dynamic
  axes ("N", "NB", "N+1");
- data-dependent output shapes: NonZero/Unique-like operators, shape-like inputs (Reshape's
  shape, Expand's shape, TopK's K, Resize's sizes/scales, ...) that do not come from constants or
  Shape arithmetic, and, after `onnx.shape_inference.infer_shapes(strict_mode=True)`, any tensor
  of unknown rank or with a dimension left unnamed;
- a few documented parser restrictions (TopK, Resize, GridSample, LayerNormalization).

Symbolic dimensions that shape inference invents (``unk__3`` for N+1 after a Concat) are
reported as notes, not problems: TensorRT resolves them from the input shapes at run time.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

# TensorRT's ONNX parser support matrix: onnx/onnx-tensorrt docs/operators.md, header
# "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24".
TRT_OPERATORS_VERSION = "10.15"
TRT_OPSET_RANGE = (9, 24)
TRT_OPERATORS_SOURCE = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15)"

SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im CenterCropPad Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool
MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

# Operators whose output shape depends on tensor values (the tracker preallocates every output).
DATA_DEPENDENT_OPS = frozenset({"NonZero", "Unique", "NonMaxSuppression", "Compress"})

# Inputs that determine an output shape: op -> input indices that must be constants or Shape
# arithmetic (never derived from tensor data).
SHAPE_INPUTS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "TopK": (1,),
    "Resize": (1, 2, 3), "Upsample": (1,), "Range": (0, 1, 2), "Slice": (1, 2, 3, 4), "Pad": (1, 3),
    "OneHot": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "Split": (1,), "CumSum": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "ReduceProd": (1,),
    "ReduceL1": (1,), "ReduceL2": (1,), "ReduceLogSum": (1,), "ReduceLogSumExp": (1,),
    "ReduceSumSquare": (1,),
}

# Ops through which a shape computation may flow (besides constants and Shape/Size).
SHAPE_ARITHMETIC_OPS = frozenset({
    "Constant", "Shape", "Size", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Cast", "Add", "Sub",
    "Mul", "Div", "Mod", "Reshape", "Identity", "ConstantOfShape", "Range", "Equal", "Where", "Max", "Min",
    "ReduceProd", "ReduceSum", "Neg", "Abs", "Floor", "Ceil", "Not", "Less", "Greater", "Expand", "Sqrt",
})

DEFAULT_ALLOWED_DOMAINS = ("trt", "s3rt")
RESIZE_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
TOPK_MAX_K = 3840


@dataclass
class LintReport:
    """Truthy when clean. `problems` block a TensorRT build; `notes` are informational."""

    source: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)
    opset: int | None = None

    def __bool__(self) -> bool:
        return not self.problems

    def format(self) -> str:
        status = "OK" if self else f"{len(self.problems)} problem(s)"
        lines = [f"{self.source}: {status} (opset {self.opset}; checked against {TRT_OPERATORS_SOURCE})"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  note: {n}" for n in self.notes]
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.ops.items()))
        lines.append(f"  ops: {ops}")
        return "\n".join(lines)


def _load(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>"
    path = Path(model)
    return onnx.load(str(path), load_external_data=False), str(path)


def _iter_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _iter_nodes(g)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dims(vi: onnx.ValueInfoProto) -> list | None:
    """None for unknown rank; else one entry per dim: int, str (symbol) or None (unnamed)."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            out.append(d.dim_param)
        else:
            out.append(None)
    return out


def lint_onnx(model: str | Path | onnx.ModelProto, *, max_opset: int = 20,
              dynamic_axes: tuple[str, ...] = ("N", "NB", "N+1"),
              allowed_domains: tuple[str, ...] = DEFAULT_ALLOWED_DOMAINS) -> LintReport:
    """Lint one ONNX graph for TensorRT (see module docstring). Never raises on a bad graph."""
    proto, source = _load(model)
    report = LintReport(source=source)
    graph = proto.graph
    declared = set(dynamic_axes)

    # opset and domains
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            report.opset = int(imp.version)
            if imp.version > max_opset:
                report.problems.append(f"opset {imp.version} > {max_opset} (the highest allowed here; TensorRT "
                                       f"{TRT_OPERATORS_VERSION} parses {TRT_OPSET_RANGE[0]}..{TRT_OPSET_RANGE[1]}): "
                                       "re-export with a lower --opset")
            if imp.version < TRT_OPSET_RANGE[0]:
                report.problems.append(f"opset {imp.version} < {TRT_OPSET_RANGE[0]}, the lowest TensorRT parses")
    if report.opset is None:
        report.problems.append("no default-domain opset import")

    # operators
    for node in _iter_nodes(graph):
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        report.ops[f"{domain}::{node.op_type}" if domain else node.op_type] += 1
        where = f"node '{node.name or node.output[0]}' ({node.op_type})"
        if domain:
            if domain not in allowed_domains:
                report.problems.append(f"{where}: custom domain '{domain}' is not allowed "
                                       f"(allowed: {', '.join(allowed_domains) or 'none'})")
            else:
                report.notes.append(f"{where}: '{domain}' op, needs a TensorRT plugin named {node.op_type}")
            continue
        if node.op_type in UNSUPPORTED_OPS:
            report.problems.append(f"{where}: not supported by TensorRT {TRT_OPERATORS_VERSION}'s ONNX parser")
        elif node.op_type not in SUPPORTED_OPS:
            report.problems.append(f"{where}: not in TensorRT {TRT_OPERATORS_VERSION}'s ONNX operator list")
        if node.op_type in DATA_DEPENDENT_OPS:
            report.problems.append(f"{where}: output shape depends on tensor values (data-dependent shape)")
    _check_restrictions(graph, report)

    # graph I/O dims
    for kind, values in (("input", graph.input), ("output", graph.output)):
        inits = {i.name for i in graph.initializer}
        for vi in values:
            if kind == "input" and vi.name in inits:
                continue
            dims = _dims(vi)
            if dims is None:
                report.problems.append(f"graph {kind} '{vi.name}': unknown rank")
                continue
            for i, d in enumerate(dims):
                if isinstance(d, int) and d > 0:
                    continue
                if isinstance(d, str) and d in declared:
                    continue
                report.problems.append(f"graph {kind} '{vi.name}' dim {i} is {d!r}: expected a static size or one "
                                       f"of the declared dynamic axes {sorted(declared)}")

    tainted = _check_shape_inputs(graph, report)
    _check_inferred_shapes(proto, report, declared, tainted)
    return report


def _check_restrictions(graph: onnx.GraphProto, report: LintReport) -> None:
    consts = _constant_values(graph)
    for node in graph.node:
        where = f"node '{node.name or node.output[0]}' ({node.op_type})"
        if node.op_type == "GridSample" and (report.opset or 0) >= 20:
            report.problems.append(f"{where}: GridSample at opset {report.opset} gives wrong results in TensorRT "
                                   "10.13 (NVIDIA/TensorRT#4646; opset 18 is correct): re-export with --opset 17..19 "
                                   "or build with --deform-plugin")
        if node.op_type == "TopK":
            if _attr(node, "sorted", 1) != 1:
                report.problems.append(f"{where}: TensorRT needs sorted=1")
            k = consts.get(node.input[1]) if len(node.input) > 1 else None
            if k is None:
                report.problems.append(f"{where}: K must be a build-time constant")
            elif int(k.reshape(-1)[0]) >= TOPK_MAX_K:
                report.problems.append(f"{where}: K={int(k.reshape(-1)[0])} must be < {TOPK_MAX_K}")
        elif node.op_type == "Resize":
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            ctm = _attr(node, "coordinate_transformation_mode", b"half_pixel")
            ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
            if mode not in ("nearest", "linear"):
                report.problems.append(f"{where}: mode '{mode}' unsupported (nearest, linear)")
            if ctm not in RESIZE_COORDINATE_MODES:
                report.problems.append(f"{where}: coordinate_transformation_mode '{ctm}' unsupported")
            if _attr(node, "antialias", 0):
                report.problems.append(f"{where}: antialiasing is unsupported")
        elif node.op_type == "LayerNormalization":
            if len([o for o in node.output if o]) > 1:
                report.problems.append(f"{where}: only the first output (Y) is supported")


def _constant_values(graph: onnx.GraphProto) -> dict:
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attr(node, "value")
            if isinstance(value, onnx.TensorProto):
                values[node.output[0]] = numpy_helper.to_array(value)
            else:
                for key in ("value_int", "value_ints", "value_float", "value_floats"):
                    v = _attr(node, key)
                    if v is not None:
                        values[node.output[0]] = np.asarray(v)
    return values


def _check_shape_inputs(graph: onnx.GraphProto, report: LintReport) -> set[str]:
    """Shape-like inputs must come from constants or Shape arithmetic, never from tensor data.

    Returns the outputs of the offending nodes (sources of data-dependent shapes).
    """
    producers = {o: n for n in graph.node for o in n.output}
    constants = {i.name for i in graph.initializer}
    graph_inputs = {i.name for i in graph.input} - constants
    memo: dict[str, str | None] = {}
    tainted: set[str] = set()

    def origin(name: str, depth: int = 0) -> str | None:
        """None if `name` is static-shape arithmetic; else the name of the data it derives from."""
        if not name or name in constants:
            return None
        if name in memo:
            return memo[name]
        if name in graph_inputs:
            memo[name] = name
            return name
        node = producers.get(name)
        if node is None or depth > 200:
            return None
        if node.op_type in ("Shape", "Size", "Constant"):
            memo[name] = None
            return None
        if node.op_type not in SHAPE_ARITHMETIC_OPS:
            memo[name] = f"{node.op_type} '{node.name or name}'"
            return memo[name]
        result = None
        for inp in node.input:
            result = origin(inp, depth + 1)
            if result is not None:
                break
        memo[name] = result
        return result

    for node in graph.node:
        for idx in SHAPE_INPUTS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx]:
                src = origin(node.input[idx])
                if src is not None:
                    tainted.update(o for o in node.output if o)
                    report.problems.append(
                        f"node '{node.name or node.output[0]}' ({node.op_type}): input {idx} "
                        f"'{node.input[idx]}' is computed from tensor data ({src}): data-dependent shape")
    return tainted


def _check_inferred_shapes(proto: onnx.ModelProto, report: LintReport, declared: set[str],
                           tainted: set[str]) -> None:
    """Unknown ranks/dims are problems downstream of a data-dependent shape, notes elsewhere.

    ONNX's inference cannot follow every static shape computation (e.g. Slice bounds computed
    with Mod, as torch emits for unflatten); TensorRT evaluates those at build time.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several error types
        report.problems.append(f"strict ONNX shape inference failed: {str(exc).splitlines()[0]}")
        return
    graph = inferred.graph
    known = {vi.name: vi for vi in (*graph.value_info, *graph.output, *graph.input)}
    tainted = set(tainted)
    invented: set[str] = set()
    unresolved: list[str] = []
    for node in graph.node:                               # topological order: propagate taint forward
        custom = node.domain not in ("", "ai.onnx")
        if node.op_type in DATA_DEPENDENT_OPS or any(i in tainted for i in node.input):
            tainted.update(o for o in node.output if o)
        for out in node.output:
            if not out:
                continue
            vi = known.get(out)
            where = f"'{out}' (output of {node.op_type} '{node.name or out}')"
            dims = _dims(vi) if vi is not None and vi.type.HasField("tensor_type") else None
            if dims is None and custom:
                tainted.add(out)
                report.problems.append(f"{where}: no shape known for a custom op's output; add value_info "
                                       "so that shapes propagate")
                continue
            bad = "unknown rank" if dims is None else ", ".join(f"dim {i} unknown" for i, d in enumerate(dims)
                                                               if d is None)
            if bad:
                if out in tainted:
                    report.problems.append(f"{where}: {bad}, downstream of a data-dependent shape")
                else:
                    unresolved.append(out)
            for d in dims or ():
                if isinstance(d, str) and d not in declared:
                    invented.add(d)
    if unresolved:
        report.notes.append(f"{len(unresolved)} tensor(s) with a rank or dim ONNX shape inference could not "
                            f"resolve from static shape arithmetic (first: '{unresolved[0]}'); TensorRT "
                            "evaluates these at build time")
    if invented:
        shown = sorted(invented)
        more = f" and {len(shown) - 6} more" if len(shown) > 6 else ""
        report.notes.append(f"shape inference introduced symbols {shown[:6]}{more} (derived from the declared "
                            "axes, resolved by TensorRT at run time)")


def main(argv: list[str] | None = None) -> int:
    """python -m s3rt.export.tensorrt.lint MODEL.onnx... : print a report per graph, exit 1 on problems."""
    parser = argparse.ArgumentParser(prog="python -m s3rt.export.tensorrt.lint", description=main.__doc__)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--max-opset", type=int, default=20)
    args = parser.parse_args(argv)
    ok = True
    for m in args.models:
        report = lint_onnx(m, max_opset=args.max_opset)
        print(report.format())
        ok = ok and bool(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
