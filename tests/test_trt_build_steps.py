"""The TensorRT build's ONNX-side steps, chained as `build_engines` chains them, without TensorRT:
lint -> deformable-attention plugin surgery -> fp16 islands. What the parser would read (the
payload) is checked after each step; `parse`/`configure`/`serialize` need TensorRT and run in
tests/test_tensorrt.py::test_build_and_track_tiny_against_onnxruntime on a GPU."""

from __future__ import annotations

import logging

import onnx
import pytest

from s3rt.export.tensorrt.build import GraphSource, add_deform_plugin, keep_fp32_islands, lint
from tests.test_tensorrt import _deform_model, _norm_model


def test_fp16_steps_on_the_exported_file(tmp_path, caplog):
    path = tmp_path / "encoder.onnx"
    onnx.save(_norm_model(), str(path))
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        src = lint(GraphSource("encoder", path), max_opset=20)
    assert src.payload() == path and "lint" not in caplog.text
    typed = keep_fp32_islands(src, "typed", tmp_path / "engines")
    assert set(typed.keep_fp32) == {"/norm/LayerNormalization"}
    kept = tmp_path / "engines" / "onnx_fp16" / "encoder.onnx"
    assert isinstance(typed.payload(), bytes) and typed.payload() == onnx.load(str(kept)).SerializeToString()
    assert any(n.op_type == "Cast" for n in onnx.load_from_string(typed.payload()).graph.node)
    constrained = keep_fp32_islands(src, "constraints", tmp_path / "c")
    assert constrained.payload() == path and constrained.keep_fp32 == typed.keep_fp32   # TensorRT constrains layers
    assert path.read_bytes() == before and src.model is None                            # steps never edit inputs


def test_plugin_surgery_then_fp16_chain(tmp_path):
    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon (the 'tensorrt' extra) is not installed")
    from s3rt.export.tensorrt.surgery import PLUGIN_OP
    path = tmp_path / "spatial_semantic.onnx"
    onnx.save(_deform_model(), str(path))
    said: list[str] = []
    src = add_deform_plugin(lint(GraphSource("spatial_semantic", path), max_opset=20), tmp_path / "out", said.append)
    assert said == ["spatial_semantic: 1 deformable-attention site(s) -> MultiscaleDeformableAttnPlugin_TRT"]
    assert (tmp_path / "out" / "onnx_plugin" / "spatial_semantic.onnx").is_file()
    ops = [n.op_type for n in onnx.load_from_string(src.payload()).graph.node]
    assert PLUGIN_OP in ops and "GridSample" not in ops
    mixed = keep_fp32_islands(src, "typed", tmp_path / "out")             # built on the surgery's result
    ops = [n.op_type for n in onnx.load_from_string(mixed.payload()).graph.node]
    assert PLUGIN_OP in ops and "GridSample" not in ops and "Cast" in ops
