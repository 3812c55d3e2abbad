"""Swap the decomposed deformable-attention sampling for TensorRT's built-in plugin (onnx + onnx-graphsurgeon).

The ViT adapter's `deform_sample` (export/model/vit_adapter.py) traces to

    GridSample(maps (B*M, D, h, w), grid (B*M, Lq, K, 2); bilinear, zeros, align_corners=0)
      -> Mul(attention (B*M, 1, Lq, K)) -> ReduceSum(axis -1, keepdims=0) -> (B*M, D, Lq)

`use_trt_deform_plugin` replaces each such chain by one `MultiscaleDeformableAttnPlugin_TRT` node
(domain "trt"; TensorRT's ONNX parser imports unknown ops as plugins by name, version attribute
`plugin_version`, default "1"; `s3rt build` registers NVIDIA's plugins with
init_libnvinfer_plugins). The plugin (TensorRT plugin/multiscaleDeformableAttnPlugin) takes

    value              (B, S, M, D)        float32/float16, S = sum of h*w over levels
    spatial_shapes     (L, 2)              int32, (h, w) per level
    level_start_index  (L,)                int32
    sampling_locations (B, Lq, M, L, K, 2) same float type, (x, y) in [0, 1]
    attention_weights  (B, Lq, M, L, K)    same float type

and returns (B, Lq, M, D). Its bilinear read is at pixel loc*size - 0.5 with zeros outside,
exactly grid_sample(align_corners=False) at grid 2*loc - 1, so the rewrite is exact up to
summation order. The adapter samples one level (L = 1); batch and heads are independent, so
the B*M maps are passed as M' = B*M heads of batch 1, and the layout changes around the node
are Reshape/Transpose only (TensorRT folds them into neighbours).

Both index inputs are int32, as the plugin's supportsFormatCombination requires. The rewritten
graph no longer runs in ONNX Runtime (no such op there): keep the original for `s3rt validate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from s3rt.errors import ModelFormatError
from s3rt.optional import optional

log = logging.getLogger(__name__)

gs_mod = optional("onnx_graphsurgeon", extra="tensorrt")

PLUGIN_OP = "MultiscaleDeformableAttnPlugin_TRT"
PLUGIN_DOMAIN = "trt"


def _attr(node, name: str, default=None):
    value = node.attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


def _static_shape(tensor, what: str) -> tuple[int, ...]:
    shape = getattr(tensor, "shape", None)
    if shape is None or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ModelFormatError(f"deformable-attention rewrite: {what} '{tensor.name}' needs a static shape, got {shape}; "
                               "the adapter is exported at a fixed resolution, so run shape inference first")
    return tuple(int(d) for d in shape)


def _reduce_axes(node) -> list[int] | None:
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(node.inputs) < 2:
        return None
    axes = node.inputs[1]
    if not hasattr(axes, "values") and len(axes.inputs) == 1 and axes.inputs[0].op == "Constant":
        axes = axes.inputs[0].attrs.get("value")          # a Constant node's tensor
    if axes is None or not hasattr(axes, "values"):
        return None
    return [int(a) for a in np.asarray(axes.values).reshape(-1)]


def _match(gs, node):
    """(grid_sample, mul, reduce_sum, attention) if `node` starts the deform_sample chain, else None."""
    if node.op != "GridSample":
        return None
    if _attr(node, "mode", "bilinear") not in ("bilinear", "linear") or _attr(node, "padding_mode", "zeros") != "zeros" \
            or int(_attr(node, "align_corners", 0)) != 0:
        return None
    sampled = node.outputs[0]
    if len(sampled.outputs) != 1 or sampled.outputs[0].op != "Mul":
        return None
    mul = sampled.outputs[0]
    attention = mul.inputs[1] if mul.inputs[0] is sampled else mul.inputs[0]
    product = mul.outputs[0]
    if len(product.outputs) != 1 or product.outputs[0].op != "ReduceSum":
        return None
    reduce = product.outputs[0]
    if int(reduce.attrs.get("keepdims", 1)) != 0 or _reduce_axes(reduce) not in ([-1], [3]):
        return None
    return node, mul, reduce, attention


def use_trt_deform_plugin(onnx_in: str | Path | onnx.ModelProto, onnx_out: str | Path | None = None, *,
                          plugin_version: str = "1") -> tuple[onnx.ModelProto, int]:
    """Rewrite every deform_sample chain into the TensorRT plugin; returns (model, count).

    Writes `onnx_out` when given. plugin_version "1" is the IPluginV2DynamicExt version present
    in TensorRT 8.6..10.x; "2" (IPluginV3, TensorRT >= 10.11) has the same inputs.
    Raises ModelFormatError if the graph has GridSample nodes but none matches the pattern.
    """
    gs = gs_mod.load()
    model = onnx_in if isinstance(onnx_in, onnx.ModelProto) else onnx.load(str(onnx_in))
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = gs.import_onnx(model)
    sites = [m for m in (_match(gs, n) for n in list(graph.nodes)) if m is not None]
    n_grid = sum(1 for n in graph.nodes if n.op == "GridSample")
    if n_grid and not sites:
        raise ModelFormatError(f"{n_grid} GridSample node(s) but none in the deform_sample pattern "
                               "(GridSample -> Mul -> ReduceSum(-1)); was vit_adapter.deform_sample changed?")
    for idx, (grid_node, mul, reduce, attention) in enumerate(sites):
        prefix = f"{grid_node.name or f'GridSample_{idx}'}/trt_msda"
        bm, d, h, w = _static_shape(grid_node.inputs[0], "sampled maps")
        bm2, lq, k, two = _static_shape(grid_node.inputs[1], "sampling grid")
        if bm2 != bm or two != 2:
            raise ModelFormatError(f"{prefix}: grid {bm2, lq, k, two} does not fit maps {bm, d, h, w}")
        result = reduce.outputs[0]

        def const(name: str, values, dtype) -> object:
            return gs.Constant(f"{prefix}/{name}", np.asarray(values, dtype=dtype))

        def op(kind: str, name: str, inputs: list, out_shape, dtype=np.float32, **attrs):
            out = gs.Variable(f"{prefix}/{name}_out", dtype=dtype, shape=list(out_shape))
            graph.nodes.append(gs.Node(kind, name=f"{prefix}/{name}", inputs=inputs, outputs=[out], attrs=attrs))
            return out

        # value: (B*M, D, h, w) -> (1, B*M, D, h*w) -> (1, h*w, B*M, D)
        v = op("Reshape", "value_reshape", [grid_node.inputs[0], const("value_shape", [1, bm, d, h * w], np.int64)],
               (1, bm, d, h * w))
        v = op("Transpose", "value_transpose", [v], (1, h * w, bm, d), perm=[0, 3, 1, 2])
        # locations: grid in [-1, 1] -> [0, 1]; (B*M, Lq, K, 2) -> (Lq, B*M, K, 2) -> (1, Lq, B*M, 1, K, 2)
        loc = op("Add", "grid_plus_one", [grid_node.inputs[1], const("one", 1.0, np.float32)], (bm, lq, k, 2))
        loc = op("Mul", "grid_half", [loc, const("half", 0.5, np.float32)], (bm, lq, k, 2))
        loc = op("Transpose", "loc_transpose", [loc], (lq, bm, k, 2), perm=[1, 0, 2, 3])
        loc = op("Reshape", "loc_reshape", [loc, const("loc_shape", [1, lq, bm, 1, k, 2], np.int64)],
                 (1, lq, bm, 1, k, 2))
        # weights: (B*M, 1, Lq, K) -> (B*M, Lq, K) -> (Lq, B*M, K) -> (1, Lq, B*M, 1, K)
        wts = op("Reshape", "weights_flat", [attention, const("weights_flat_shape", [bm, lq, k], np.int64)], (bm, lq, k))
        wts = op("Transpose", "weights_transpose", [wts], (lq, bm, k), perm=[1, 0, 2])
        wts = op("Reshape", "weights_reshape", [wts, const("weights_shape", [1, lq, bm, 1, k], np.int64)],
                 (1, lq, bm, 1, k))
        plugin_out = gs.Variable(f"{prefix}/plugin_out", dtype=np.float32, shape=[1, lq, bm, d])
        graph.nodes.append(gs.Node(
            PLUGIN_OP, name=f"{prefix}/plugin", domain=PLUGIN_DOMAIN,
            inputs=[v, const("spatial_shapes", [[h, w]], np.int32), const("level_start_index", [0], np.int32), loc, wts],
            outputs=[plugin_out], attrs={"plugin_version": plugin_version, "plugin_namespace": ""}))
        # (1, Lq, B*M, D) -> (Lq, B*M, D) -> (B*M, D, Lq): the ReduceSum's output tensor, rewired
        r = op("Reshape", "out_reshape", [plugin_out, const("out_shape", [lq, bm, d], np.int64)], (lq, bm, d))
        reduce.outputs.clear()
        graph.nodes.append(gs.Node("Transpose", name=f"{prefix}/out_transpose", inputs=[r], outputs=[result],
                                   attrs={"perm": [1, 2, 0]}))
        grid_node.outputs.clear()
        mul.outputs.clear()
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    if sites and not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    if onnx_out is not None:
        onnx.save(out, str(onnx_out))
    log.info("replaced %d deformable-attention site(s) by %s", len(sites), PLUGIN_OP)
    return out, len(sites)


def msda_reference(value: np.ndarray, spatial_shapes: np.ndarray, level_start_index: np.ndarray,
                   sampling_locations: np.ndarray, attention_weights: np.ndarray) -> np.ndarray:
    """NumPy statement of the plugin's math (for tests): (B, Lq, M, D).

    Per level l of size (h, w): bilinear read of value[b, start_l:start_l + h*w, m] (row-major
    h x w) at pixel (x*w - 0.5, y*h - 0.5), zeros outside, weighted by attention and summed over
    levels and points.
    """
    b, _, m, d = value.shape
    _, lq, _, n_levels, k, _ = sampling_locations.shape
    out = np.zeros((b, lq, m, d), np.float64)
    for lvl in range(n_levels):
        h, w = (int(x) for x in spatial_shapes[lvl])
        start = int(level_start_index[lvl])
        maps = value[:, start:start + h * w].reshape(b, h, w, m, d).astype(np.float64)
        x = sampling_locations[:, :, :, lvl, :, 0].astype(np.float64) * w - 0.5      # (B, Lq, M, K)
        y = sampling_locations[:, :, :, lvl, :, 1].astype(np.float64) * h - 0.5
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        for dy in (0, 1):
            for dx in (0, 1):
                xi, yi = x0 + dx, y0 + dy
                wx = (x - x0) if dx else (1 - (x - x0))
                wy = (y - y0) if dy else (1 - (y - y0))
                inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
                bi = np.arange(b)[:, None, None, None]
                mi = np.arange(m)[None, None, :, None]
                vals = maps[bi, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1), mi]          # (B, Lq, M, K, D)
                coef = (wx * wy * inside * attention_weights[:, :, :, lvl].astype(np.float64))[..., None]
                out += (coef * vals).sum(axis=3)
    return out.astype(np.float32)


__all__ = ["PLUGIN_DOMAIN", "PLUGIN_OP", "msda_reference", "use_trt_deform_plugin"]
