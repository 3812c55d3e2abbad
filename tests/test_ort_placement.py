"""ONNX Runtime node placement: parsed from the verbose session log, CPU compute refused for GPU
providers, the provider chain with the TensorRT EP's profiles, and the log kept when a build fails."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from s3rt.errors import BackendError
from s3rt.runtime.backends.onnxruntime.backend import provider_list, shape_list
from s3rt.runtime.backends.onnxruntime.placement import (build_session_with_placement, check_placement, log_problems,
                                                         parse_placement)
from s3rt.runtime.backends.tensorrt.engines import optimization_profiles
from tests.test_tensorrt import tiny_manifest


# -- ONNX Runtime placement --------------------------------------------------------------------------
MIXED_LOG = """\
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1598 VerifyEachNodeIsAssignedToAnEp] Node placements
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1601 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 2
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1605 VerifyEachNodeIsAssignedToAnEp]   Conv (/enc/conv1/Conv)
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1605 VerifyEachNodeIsAssignedToAnEp]   MatMul (/attn/MatMul)
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1601 VerifyEachNodeIsAssignedToAnEp]  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 2
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1605 VerifyEachNodeIsAssignedToAnEp]   Shape (/Shape)
2026-12-04 17:51:02.5 [V:onnxruntime:, session_state.cc:1605 VerifyEachNodeIsAssignedToAnEp]   TopK (/readout/TopK)
"""


def test_parse_mixed_placement_and_refuse_cpu_compute():
    p = parse_placement(MIXED_LOG)
    assert dict(p) == {"CUDAExecutionProvider": 2, "CPUExecutionProvider": 2}
    assert p.nodes["CPUExecutionProvider"] == [("Shape", "/Shape"), ("TopK", "/readout/TopK")]
    with pytest.raises(BackendError, match=r"2 of 4 nodes on CPUExecutionProvider, compute: TopK \(/readout/TopK\)"):
        check_placement(p, "CUDAExecutionProvider", "memory_readout")
    notes = check_placement(p, "CUDAExecutionProvider", "memory_readout", allow_cpu_compute=True)
    assert notes and "TopK" in notes[0]
    shape_only = parse_placement(MIXED_LOG.replace("TopK (/readout/TopK)", "Gather (/Gather)"))
    assert "shape ops only" in check_placement(shape_only, "CUDAExecutionProvider", "g")[0]
    with pytest.raises(BackendError, match="did not report node placement"):
        check_placement(parse_placement(""), "CUDAExecutionProvider", "g")


def test_real_cpu_session_placement_is_detected():
    ort = pytest.importorskip("onnxruntime")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu"),
                           helper.make_node("Neg", ["y"], ["z"], name="neg")], "g", [x], [z])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    sess, placement = build_session_with_placement(ort, model.SerializeToString(), opts, ["CPUExecutionProvider"])
    assert dict(placement) == {"CPUExecutionProvider": 2}
    assert opts.log_severity_level != 0                     # verbosity restored after the build
    np.testing.assert_array_equal(sess.run(None, {"x": np.ones((2, 3), np.float32)})[0], -np.ones((2, 3)))
    assert check_placement(placement, "CPUExecutionProvider", "g") == []
    # the same real placement, had CUDA been asked for: every node fell back to CPU -> refused
    with pytest.raises(BackendError, match="all 2 nodes"):
        check_placement(placement, "CUDAExecutionProvider", "g")


def test_provider_chain_and_tensorrt_ep_profiles(tmp_path):
    profiles = optimization_profiles(tiny_manifest(tmp_path, max_objects=4, max_buckets=2))
    readout = profiles["memory_readout"]
    every = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chain = provider_list("tensorrt", every, readout, tmp_path / "cache")
    assert [c if isinstance(c, str) else c[0] for c in chain] == every
    opts = chain[0][1]
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert "object_bucket:1" in opts["trt_profile_min_shapes"] and "object_bucket:4" in opts["trt_profile_max_shapes"]
    assert opts["trt_profile_opt_shapes"].count(",") == len(readout) - 1
    assert opts["device_id"] == "0"
    assert provider_list("cuda", every, {}, tmp_path, device=1) == [("CUDAExecutionProvider", {"device_id": "1"}),
                                                                  "CPUExecutionProvider"]
    assert provider_list("tensorrt", every, {}, tmp_path, device=1)[0][1]["device_id"] == "1"
    assert provider_list("cpu", every, {}, tmp_path) == ["CPUExecutionProvider"]
    assert shape_list({"a": (1, 2), "b": (3,)}) == "a:1x2,b:3"


def test_failed_session_build_keeps_the_log(capsys):
    """A real ONNX Runtime build that logs a warning and then fails: the warning comes with the error."""
    ort = pytest.importorskip("onnxruntime")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 7])          # wrong: Relu keeps (2, 3)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 5], [1.0] * 20)
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu"),
                           helper.make_node("Add", ["x", "w"], ["z"], name="add")],     # (2, 3) + (4, 5): fails
                          "g", [x], [y, z], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    with pytest.raises(BackendError, match=r"Incompatible dimensions; ONNX Runtime log \(warnings and errors\): "
                                           r".*\[W:onnxruntime.*Error merging shape info for output\. 'y'") as err:
        build_session_with_placement(ort, model.SerializeToString(), opts, ["CPUExecutionProvider"])
    assert "\x1b[" not in str(err.value)                                      # colour codes stripped
    assert opts.log_severity_level == 3                                       # restored after a failure too
    assert "Error merging shape info for output. 'y'" in capsys.readouterr().err


def test_log_problems_picks_warnings_and_errors_of_every_provider():
    text = ("2026 [V:onnxruntime:, session_state.cc:1598 VerifyEachNodeIsAssignedToAnEp] Node placements\n"
            "\x1b[0;93m2026 [W:onnxruntime:, graph.cc:128 MergeShapeInfo] merging\x1b[m\n"
            "2026 [E:onnxruntime:Default, tensorrt_execution_provider.h:88 log] [TRT] ERROR: out of memory\n"
            "2026 [I:onnxruntime:, inference_session.cc:1 Init] info\n")
    assert log_problems(text) == ["2026 [W:onnxruntime:, graph.cc:128 MergeShapeInfo] merging",
                                  "2026 [E:onnxruntime:Default, tensorrt_execution_provider.h:88 log] [TRT] ERROR: out of memory"]
    assert log_problems(text, limit=1) == [log_problems(text)[1]]
