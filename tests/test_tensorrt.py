"""TensorRT support: engine manifest, profiles, DeviceArray math, lint, fp16 rewrite, plugin surgery.

Everything here but the last section runs without TensorRT or a GPU. Tests that need them are
marked `tensorrt`/`gpu` and skip with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from s3rt.configs import InferenceConfig, get_config  # noqa: E402
from s3rt.errors import BackendError, ConfigError, MissingDependencyError, ModelFormatError  # noqa: E402
from s3rt.runtime.backends.tensorrt.backend import (DeviceArray, TensorRTBackend, contiguous_strides,  # noqa: E402
                                                    plan_copy)
from s3rt.runtime.contract import GRAPH_ORDER, Geometry, graph_specs  # noqa: E402
from s3rt.runtime.backends.tensorrt.engines import (EngineEntry, EngineManifest, MachineInfo, axis_ranges,  # noqa: E402
                                          check_compatible, check_onnx_hashes, file_sha256, load_engine_manifest,
                                          optimization_profiles)
from s3rt.runtime.manifest import Manifest  # noqa: E402


# -- fixtures ----------------------------------------------------------------------------------------
def tiny_manifest(root: Path, max_objects: int = 4, max_buckets: int = 2) -> Manifest:
    settings = InferenceConfig(max_objects=max_objects, max_buckets=max_buckets)
    geo = Geometry(64, 96, settings.memory_slots)
    cfg = get_config("tiny")
    return Manifest(root=root, model=cfg, settings=settings, height=64, width=96, geometry=geo, opset=17,
                    checkpoint_sha256=None, graphs=graph_specs(cfg, geo, settings),
                    files={g: f"{g}.onnx" for g in GRAPH_ORDER}, s3rt_version="test", extra={})


def engine_manifest(root: Path, **over) -> EngineManifest:
    fields = dict(root=root, tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
                  precision="fp16", engines={g: EngineEntry(f"{g}.engine", f"{g}.onnx", "0" * 64) for g in GRAPH_ORDER},
                  max_objects=4, max_buckets=2)
    fields.update(over)
    return EngineManifest(**fields)


ORIN = MachineInfo("10.3.0.30", "Orin", "8.7")


# -- engine manifest -------------------------------------------------------------------------------
def test_engine_manifest_roundtrip_and_keys(tmp_path):
    m = engine_manifest(tmp_path, fp32_layers={"mask_decoder": ["/Softmax"]})
    for g in GRAPH_ORDER:
        (tmp_path / f"{g}.engine").write_bytes(b"x")
    path = m.save()
    data = json.loads(path.read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "s3rt_version", "engines"):
        assert key in data
    assert set(data["engines"]) == set(GRAPH_ORDER)
    assert set(data["engines"]["encoder"]) >= {"file", "onnx_file", "onnx_sha256"}
    back = load_engine_manifest(tmp_path)
    assert back.machine == ORIN and back.precision == "fp16"
    assert back.fp32_layers == {"mask_decoder": ["/Softmax"]}
    assert back.path("encoder") == tmp_path / "encoder.engine"


def test_engine_manifest_missing_files_and_dir(tmp_path):
    with pytest.raises(ModelFormatError, match="s3rt build"):
        load_engine_manifest(tmp_path)
    engine_manifest(tmp_path).save()
    with pytest.raises(ModelFormatError, match="missing"):
        load_engine_manifest(tmp_path)


def test_compatible_same_machine_and_build_number_differs(tmp_path):
    check_compatible(engine_manifest(tmp_path), ORIN, precision="fp16")
    with pytest.raises(BackendError, match=r"TensorRT 10\.3\.0\.30 vs 10\.3\.0\.26"):
        check_compatible(engine_manifest(tmp_path), MachineInfo("10.3.0.26", "Orin", "8.7"))


@pytest.mark.parametrize("machine, words", [
    (MachineInfo("10.7.0.23", "Orin", "8.7"), ("10.3.0.30", "10.7.0.23")),
    (MachineInfo("10.3.0.30", "NVIDIA GeForce RTX 4090", "8.9"), ("Orin", "RTX 4090", "8.7", "8.9")),
    (MachineInfo("10.3.0.30", "NVIDIA A100", "8.7"), ("'Orin'", "'NVIDIA A100'")),
])
def test_incompatible_machine_names_both_sides(tmp_path, machine, words):
    with pytest.raises(BackendError) as err:
        check_compatible(engine_manifest(tmp_path), machine)
    text = str(err.value)
    assert "rebuild with `s3rt build --model DIR`" in text
    for w in words:
        assert w in text


def test_other_gpu_allowed_only_when_asked(tmp_path):
    other = MachineInfo("10.3.0.30", "Jetson AGX Orin", "8.7")
    with pytest.raises(BackendError):
        check_compatible(engine_manifest(tmp_path), other)
    check_compatible(engine_manifest(tmp_path), other, allow_other_gpu=True)


def test_precision_mismatch(tmp_path):
    with pytest.raises(BackendError, match=r"precision fp16, fp32 was asked for.*--precision fp32"):
        check_compatible(engine_manifest(tmp_path), ORIN, precision="fp32")


def test_onnx_hash_check(tmp_path):
    model = tiny_manifest(tmp_path)
    for g in GRAPH_ORDER:
        (tmp_path / f"{g}.onnx").write_bytes(g.encode())
    engines = {g: EngineEntry(f"{g}.engine", f"{g}.onnx", file_sha256(tmp_path / f"{g}.onnx")) for g in GRAPH_ORDER}
    m = engine_manifest(tmp_path / "engines", engines=engines)
    check_onnx_hashes(m, model)
    (tmp_path / "mask_decoder.onnx").write_bytes(b"re-exported")
    with pytest.raises(BackendError, match="mask_decoder"):
        check_onnx_hashes(m, model)


# -- optimisation profiles ------------------------------------------------------------------------
def test_axis_ranges():
    assert axis_ranges(8, 4) == {"N": (1, 2, 8), "NB": (1, 1, 4), "N+1": (2, 3, 9)}
    assert axis_ranges(1, 1)["N"] == (1, 1, 1)
    with pytest.raises(ConfigError):
        axis_ranges(0, 1)


def test_profiles_from_manifest(tmp_path):
    m = tiny_manifest(tmp_path, max_objects=4, max_buckets=2)
    profiles = optimization_profiles(m)
    assert set(profiles) == set(GRAPH_ORDER)
    assert profiles["encoder"] == {} and profiles["spatial_semantic"] == {}    # static graphs need no profile
    cfg, S, P = m.model, m.geometry.slots, m.geometry.tokens
    readout = profiles["memory_readout"]
    assert set(readout) == {"mem_value", "bucket_valid", "object_bucket", "sensory", "prev_prob"}
    assert readout["mem_value"] == ((1, cfg.value_dim, S * P), (2, cfg.value_dim, S * P), (4, cfg.value_dim, S * P))
    assert readout["bucket_valid"] == ((1, S), (1, S), (2, S))
    assert readout["object_bucket"] == ((1,), (2,), (4,))
    assert readout["prev_prob"] == ((1, 1, 64, 96), (1, 2, 64, 96), (1, 4, 64, 96))
    assert set(profiles["query_attention"]) == {"pixel_readout", "object_memory"}
    assert set(profiles["mask_decoder"]) == {"readout", "sensory"}
    assert set(profiles["mask_encoder"]) == {"sensory", "masks"}


def test_profiles_max_objects_override(tmp_path):
    m = tiny_manifest(tmp_path, max_objects=4)
    assert optimization_profiles(m, max_objects=1)["mask_decoder"]["sensory"][2][1] == 1
    with pytest.raises(ConfigError, match="re-export"):
        optimization_profiles(m, max_objects=5)


# -- DeviceArray and copy planning (pure offset math, no CUDA) -------------------------------------
def test_device_array_views_follow_numpy():
    host = np.zeros((1, 5, 3, 4, 6), np.float32)
    dev = DeviceArray(4096, host.shape, np.float32)
    for key in [(slice(None), slice(0, 2)), (0, slice(1, 4)), (slice(None), 3), (Ellipsis, 2), (0,),
                (0, slice(2, 2))]:
        view, ref = dev[key], host[key]
        assert view.shape == ref.shape
        assert view.strides == tuple(s // 4 for s in ref.strides)
        if ref.size:
            offset = ref.__array_interface__["data"][0] - host.__array_interface__["data"][0]
            assert view.ptr == 4096 + offset
        assert view.is_contiguous == ref.flags.c_contiguous
    probs = DeviceArray(0, (1, 9, 64, 96), np.float32)
    prev = probs[:, 1:4]                       # the tracker's prev_prob / masks view
    assert prev.ptr == 64 * 96 * 4 and prev.is_contiguous and prev.ptr % 256 == 0


def test_device_array_reshape_and_errors():
    value = DeviceArray(0, (1, 4, 32, 4, 6), np.float32)[0, :2]
    assert value.reshape(2, 32, -1).shape == (2, 32, 24)
    mem_key = DeviceArray(0, (1, 16, 8 * 24), np.float32)
    slot = mem_key[:, :, 24:48]
    assert not slot.is_contiguous
    with pytest.raises(ValueError):
        slot.reshape(16, 24)
    with pytest.raises(IndexError):
        mem_key[:, ::2]
    with pytest.raises(IndexError):
        mem_key[0, 16]
    with pytest.raises(ValueError):
        value.reshape(5, -1)


def _run_plans(dst_buf: np.ndarray, dst_ptr: int, src_buf: np.ndarray, src_ptr: int, plans) -> None:
    """Execute Copy2D plans on byte buffers, as cudaMemcpy2D would."""
    for c in plans:
        for row in range(c.height):
            d = dst_ptr + c.dst_offset + row * c.dst_pitch
            s = src_ptr + c.src_offset + row * c.src_pitch
            dst_buf[d:d + c.width] = src_buf[s:s + c.width]


@pytest.mark.parametrize("dst_key, src_key", [
    ((slice(None), slice(None), slice(24, 48)), None),                 # mem_key[:, :, slot] = key
    ((slice(0, 3), slice(None), slice(48, 72)), None),                 # mem_value[:n, :, slot] = value
    ((slice(None), slice(1, 3)), (slice(None), slice(0, 2))),          # contiguous rows
    ((slice(1, 3), slice(None), slice(0, 24)), (slice(0, 2), slice(None), slice(24, 48))),  # strided both sides
])
def test_plan_copy_matches_numpy(dst_key, src_key):
    rng = np.random.default_rng(0)
    dst_host = np.zeros((4, 5, 96), np.float32)
    dst_dev = DeviceArray(0, dst_host.shape, np.float32)[dst_key]
    shape = dst_dev.shape
    if src_key is None:
        src_host = rng.random(shape, dtype=np.float32)
        src_dev = DeviceArray(0, shape, np.float32)
    else:
        src_host = rng.random((4, 5, 96), dtype=np.float32)
        src_dev = DeviceArray(0, src_host.shape, np.float32)[src_key]
    plans = plan_copy(shape, dst_dev.strides, src_dev.strides, 4)
    dst_bytes = dst_host.view(np.uint8).reshape(-1).copy()
    _run_plans(dst_bytes, dst_dev.ptr, np.ascontiguousarray(src_host).view(np.uint8).reshape(-1), src_dev.ptr, plans)
    want = dst_host.copy()
    want[dst_key] = src_host if src_key is None else src_host[src_key]
    np.testing.assert_array_equal(dst_bytes.view(np.float32).reshape(want.shape), want)


def test_plan_copy_counts():
    # one memory slot of mem_value for 3 objects: one 2-D copy of 3*C rows
    plans = plan_copy((3, 32, 24), (32 * 192, 192, 1), contiguous_strides((3, 32, 24)), 4)
    assert len(plans) == 1 and plans[0].height == 96 and plans[0].width == 96
    assert plans[0].dst_pitch == 192 * 4 and plans[0].src_pitch == 96
    # contiguous to contiguous: a single row
    plans = plan_copy((2, 5, 7), contiguous_strides((2, 5, 7)), contiguous_strides((2, 5, 7)), 8)
    assert plans == [plans[0]] and plans[0].height == 1 and plans[0].width == 2 * 5 * 7 * 8
    assert plan_copy((0, 3), (3, 1), (3, 1), 4) == []


# -- backend without TensorRT / GPU -------------------------------------------------------------------
def test_backend_construction_does_no_work(tmp_path):
    backend = TensorRTBackend(tmp_path / "does-not-exist", device=3)
    assert backend.engine_dir == tmp_path / "does-not-exist" / "engines"
    assert backend.describe()["backend"] == "tensorrt"


def test_backend_open_without_tensorrt(tmp_path):
    from s3rt.optional import tensorrt
    if tensorrt.is_available():
        pytest.skip("TensorRT is installed here; this checks the message when it is not")
    with pytest.raises(MissingDependencyError, match=r"tensorrt.*s3rt\[tensorrt-cu12\].*tensorrt-cu13"):
        TensorRTBackend(tmp_path).open()


def test_tensorrt_modules_never_import_torch():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('torch blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import s3rt.runtime.backends.tensorrt.backend, s3rt.runtime.backends.tensorrt.engines, s3rt.runtime.backends.tensorrt.validate\n"
            "import s3rt.export.tensorrt.lint, s3rt.export.tensorrt.build, s3rt.export.tensorrt.precision, "
            "s3rt.export.tensorrt.surgery, s3rt.cli.build\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_cli_build_without_tensorrt(tmp_path, capsys):
    from s3rt.cli.main import main
    from s3rt.optional import tensorrt
    assert main(["build", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "manifest.json" in err            # the export is checked first
    if not tensorrt.is_available():
        model = tiny_manifest(tmp_path)
        for g in GRAPH_ORDER:
            (tmp_path / f"{g}.onnx").write_bytes(b"")
        model.save()
        assert main(["build", "--model", str(tmp_path)]) == 1
        assert "s3rt[tensorrt-cu12]" in capsys.readouterr().err


# -- lint --------------------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])


def _clean_model(opset=17, dim="N"):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim, 8])
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Sigmoid", ["h"], ["y"], name="sig")]
    return _model(nodes, [x], [y], [w], opset=opset)


def test_lint_clean_graph_passes():
    from s3rt.export.tensorrt.lint import lint_onnx
    report = lint_onnx(_clean_model())
    assert report, report.format()
    assert report.ops == {"MatMul": 1, "Sigmoid": 1}
    assert "OK" in report.format()


def test_lint_flags_bad_opset_op_and_dims():
    from s3rt.export.tensorrt.lint import lint_onnx
    assert any("opset 21" in p for p in lint_onnx(_clean_model(opset=21)).problems)
    report = lint_onnx(_clean_model(dim="M"))
    assert any("dim 1 is 'M'" in p for p in report.problems)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    unique = _model([helper.make_node("Unique", ["x"], ["y"], name="u")], [x], [y])
    problems = lint_onnx(unique).problems
    assert any("not supported" in p for p in problems) and any("data-dependent" in p for p in problems)


def test_lint_flags_data_dependent_reshape_and_custom_domains():
    from s3rt.export.tensorrt.lint import lint_onnx
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])
    reshape = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="r")], [x, s], [y])
    assert any("computed from tensor data" in p for p in lint_onnx(reshape).problems)
    y2 = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    custom = _model([helper.make_node("MyOp", ["x"], ["y"], name="c", domain="acme")], [x], [y2],
                    extra_opsets=[helper.make_opsetid("acme", 1)])
    assert any("custom domain 'acme'" in p for p in lint_onnx(custom).problems)
    assert not any("custom domain" in p for p in lint_onnx(custom, allowed_domains=("acme",)).problems)


# -- fp16 islands and the ONNX-level mixed-precision rewrite ------------------------------------------
def _norm_model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(8, np.float32), "g"), numpy_helper.from_array(np.zeros(8, np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="/proj/MatMul"),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], name="/norm/LayerNormalization", axis=-1),
             helper.make_node("Relu", ["n"], ["r"], name="/act/Relu"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="/out/MatMul")]
    return _model(nodes, [x], [y], inits)


def test_fp32_islands_and_mixed_fp16_rewrite():
    from s3rt.export.tensorrt.precision import convert_to_mixed_fp16, fp32_nodes
    model = _norm_model()
    keep = fp32_nodes(model, "encoder")
    assert set(keep) == {"/norm/LayerNormalization"}
    mixed = convert_to_mixed_fp16(model, keep)
    onnx.checker.check_model(mixed, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(mixed)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    assert types["y"] == TensorProto.FLOAT and mixed.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    ln = next(n for n in mixed.graph.node if n.op_type == "LayerNormalization")
    assert types[ln.output[0]] == TensorProto.FLOAT and all(types.get(i, TensorProto.FLOAT) == TensorProto.FLOAT
                                                           for i in ln.input[:1])
    relu = next(n for n in mixed.graph.node if n.op_type == "Relu")
    assert types[relu.output[0]] == TensorProto.FLOAT16
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(mixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=5e-2, rtol=5e-2)


def test_fp32_tails_follow_outputs_back_to_last_conv():
    from s3rt.export.tensorrt.precision import fp32_nodes
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 2, 4, 4])
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/dec/Conv"),
             helper.make_node("Sigmoid", ["c"], ["s"], name="/Sigmoid"),
             helper.make_node("Log", ["s"], ["l"], name="/Log"),
             helper.make_node("Softmax", ["l"], ["probs"], name="/Softmax", axis=1)]
    keep = fp32_nodes(_model(nodes, [x], [out], [w]), "mask_decoder")
    assert set(keep) == {"/Sigmoid", "/Log", "/Softmax"}


# -- deformable-attention plugin surgery ----------------------------------------------------------------
def _deform_model(bm=4, d=6, h=3, w=5, lq=7, k=4):
    """The pattern vit_adapter.deform_sample traces to: GridSample -> Mul -> ReduceSum(-1)."""
    maps = helper.make_tensor_value_info("maps", TensorProto.FLOAT, [bm, d, h, w])
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [bm, lq, k, 2])
    attn = helper.make_tensor_value_info("attn", TensorProto.FLOAT, [bm, 1, lq, k])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [bm, d, lq])
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    nodes = [helper.make_node("GridSample", ["maps", "grid"], ["s"], name="/attn/GridSample", mode="bilinear",
                              padding_mode="zeros", align_corners=0),
             helper.make_node("Mul", ["s", "attn"], ["p"], name="/attn/Mul"),
             helper.make_node("ReduceSum", ["p", "axes"], ["out"], name="/attn/ReduceSum", keepdims=0)]
    return _model(nodes, [maps, grid, attn], [out], [axes])


def test_plugin_surgery_structure_and_lint():
    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon (the 'tensorrt' extra) is not installed")
    from s3rt.export.tensorrt.lint import lint_onnx
    from s3rt.export.tensorrt.surgery import PLUGIN_DOMAIN, PLUGIN_OP, use_trt_deform_plugin
    new, count = use_trt_deform_plugin(_deform_model())
    assert count == 1
    assert not any(n.op_type == "GridSample" for n in new.graph.node)
    plugin = [n for n in new.graph.node if n.op_type == PLUGIN_OP]
    assert len(plugin) == 1 and plugin[0].domain == PLUGIN_DOMAIN and len(plugin[0].input) == 5
    inferred = onnx.shape_inference.infer_shapes(new)
    shapes = {v.name: ([d.dim_value for d in v.type.tensor_type.shape.dim], v.type.tensor_type.elem_type)
              for v in (*inferred.graph.value_info, *inferred.graph.output)}
    consts = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    value, ss, lsi, loc, wts = plugin[0].input
    assert shapes[value] == ([1, 15, 4, 6], TensorProto.FLOAT)                # (B, h*w, M, D)
    assert consts[ss].dtype == np.int32 and consts[ss].tolist() == [[3, 5]]   # plugin wants int32
    assert consts[lsi].dtype == np.int32 and consts[lsi].tolist() == [0]
    assert shapes[loc][0] == [1, 7, 4, 1, 4, 2] and shapes[wts][0] == [1, 7, 4, 1, 4]
    assert shapes[plugin[0].output[0]][0] == [1, 7, 4, 6]
    assert shapes["out"][0] == [4, 6, 7]
    assert lint_onnx(new), lint_onnx(new).format()
    assert not lint_onnx(new, allowed_domains=())


def test_plugin_surgery_is_exact():
    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon (the 'tensorrt' extra) is not installed")
    ort = pytest.importorskip("onnxruntime")
    from onnx.utils import Extractor
    from s3rt.export.tensorrt.surgery import PLUGIN_OP, msda_reference, use_trt_deform_plugin
    model = _deform_model()
    rng = np.random.default_rng(0)
    feed = {"maps": rng.standard_normal((4, 6, 3, 5)).astype(np.float32),
            "grid": rng.uniform(-1.2, 1.2, (4, 7, 4, 2)).astype(np.float32),      # some samples fall outside
            "attn": rng.random((4, 1, 7, 4), dtype=np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    new = onnx.shape_inference.infer_shapes(use_trt_deform_plugin(model)[0])
    plugin = next(n for n in new.graph.node if n.op_type == PLUGIN_OP)
    before = Extractor(new).extract_model(["maps", "grid", "attn"], [plugin.input[0], plugin.input[3], plugin.input[4]])
    value, loc, wts = ort.InferenceSession(before.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    consts = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    plugin_out = msda_reference(value, consts[plugin.input[1]], consts[plugin.input[2]], loc, wts)
    after = Extractor(new).extract_model([plugin.output[0]], ["out"])
    got = ort.InferenceSession(after.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {plugin.output[0]: plugin_out})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_plugin_surgery_on_traced_adapter(tmp_path, tiny_model):
    """The real trace of vit_adapter.deform_sample matches the pattern (tiny config)."""
    pytest.importorskip("onnx_graphsurgeon", reason="onnx-graphsurgeon (the 'tensorrt' extra) is not installed")
    from s3rt.export.tensorrt.precision import convert_to_mixed_fp16, fp32_nodes
    from s3rt.export.tensorrt.lint import lint_onnx
    from s3rt.export.tensorrt.surgery import PLUGIN_OP, use_trt_deform_plugin
    from s3rt.runtime.manifest import load_manifest
    manifest = load_manifest(tiny_model)
    new, count = use_trt_deform_plugin(manifest.path("spatial_semantic"), tmp_path / "plugin.onnx")
    cfg = manifest.model.vit
    assert count == cfg.interactions + cfg.extra_extractors
    assert sum(n.op_type == PLUGIN_OP for n in new.graph.node) == count
    assert not any(n.op_type == "GridSample" for n in new.graph.node)
    report = lint_onnx(new)
    assert not [p for p in report.problems if "trt" in p or "custom" in p], report.format()
    # islands on the real graphs: the readout's TopK/Softmax and the decoder's aggregation stay fp32
    readout = onnx.load(str(manifest.path("memory_readout")))
    kept = {n.op_type for n in readout.graph.node if n.name in fp32_nodes(readout, "memory_readout")}
    assert {"TopK", "Softmax", "MatMul"} <= kept
    decoder = onnx.load(str(manifest.path("mask_decoder")))
    keep = fp32_nodes(decoder, "mask_decoder")
    assert {"Softmax", "Log", "Tanh"} <= {n.op_type for n in decoder.graph.node if n.name in keep}
    assert "Conv" not in {n.op_type for n in decoder.graph.node if n.name in keep}
    onnx.checker.check_model(convert_to_mixed_fp16(decoder, keep), full_check=True)


# -- needs TensorRT and a GPU ---------------------------------------------------------------------------
def _have_trt_gpu() -> str | None:
    from s3rt.optional import cuda_bindings, tensorrt
    if not tensorrt.is_available():
        return "TensorRT is not installed (pip install \"s3rt[tensorrt]\" or JetPack)"
    if not cuda_bindings.is_available():
        return "cuda-python is not installed"
    try:
        from cuda.bindings import runtime as rt
        err, count = rt.cudaGetDeviceCount()
        if err != rt.cudaError_t.cudaSuccess or not count:
            return f"no CUDA GPU ({err})"
    except Exception as exc:  # noqa: BLE001
        return f"CUDA unusable: {exc}"
    return None


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_track_tiny_against_onnxruntime(tmp_path, precision, request):
    reason = _have_trt_gpu()
    if reason:
        pytest.skip(reason)
    import shutil

    from s3rt.export.tensorrt.build import build_engines
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.tensorrt.validate import clip_mask_iou
    from s3rt.runtime.io.synthetic import first_frame_clip
    shutil.copytree(request.getfixturevalue("tiny_model"), tmp_path, dirs_exist_ok=True)   # engines go beside it
    engines = build_engines(tmp_path, precision=precision, workspace_mib=512, progress=False)
    assert set(engines.engines) == set(GRAPH_ORDER)
    frames, first = first_frame_clip(6, 64, 96, num_objects=2)
    with TensorRTBackend(tmp_path, precision=precision) as trt_backend:
        ious = clip_mask_iou(trt_backend, OnnxRuntimeBackend(tmp_path), frames, first)
    assert np.mean(ious) >= (0.99 if precision == "fp32" else 0.9)
