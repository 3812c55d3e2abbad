"""The one comparator (s3rt.runtime.compare): tensor checks, mask IoU, argmax agreement."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.errors import ShapeError
from s3rt.runtime.preprocess import argmax_labels, check_rgb8, resize_index_mask
from s3rt.runtime.compare import (argmax_agreement, clip_ious, compare_tensors, elementwise_failures,
                                  format_checks, frame_agreement, mask_iou, object_ious)


def test_tensor_check_is_truthy_within_atol_or_rtol_and_names_the_failing_tolerance():
    ref = np.array([100.0, 0.0, 1.0, -2.0], np.float32)
    ok = compare_tensors("g", "y", ref + np.array([2e-3, 5e-4, 0, 0], np.float32), ref, atol=1e-3, rtol=1e-3)
    assert ok and ok.failed == 0 and ok.verdict() == "yes"
    assert ok.max_abs == pytest.approx(2e-3, rel=1e-3)             # 100.002: over atol, within rtol
    assert ok.max_rel == np.inf                                     # 5e-4 against 0: x / 0
    bad = compare_tensors("g", "y", ref + np.array([0, 0, 0.5, 0], np.float32), ref, atol=1e-3, rtol=1e-3, objects=2)
    assert not bad and bad.failed == 1 and bad.size == 4 and bad.objects == 2
    assert bad.max_abs == pytest.approx(0.5) and bad.max_rel == pytest.approx(0.5)
    assert bad.verdict() == "NO (1 of 4 > atol 0.001, rtol 0.001)"
    # rtol 0 (the export's parity): plain |d| <= atol
    ref64 = ref.astype(np.float64)
    assert compare_tensors("g", "y", ref64 + 5e-4, ref64, atol=1e-3)
    assert not compare_tensors("g", "y", ref64 + 2e-3, ref64, atol=1e-3)


def test_nan_and_inf_never_pass_where_they_differ():
    ref = np.array([1.0, np.inf, np.nan, 2.0])
    same = compare_tensors("g", "y", ref.copy(), ref, atol=1e-3)
    assert same and same.max_abs == 0.0
    got = np.array([np.nan, np.inf, np.nan, np.inf])
    check = compare_tensors("g", "y", got, ref, atol=1e9, rtol=1e9)
    assert not check and check.failed == 2 and check.max_abs == np.inf
    assert elementwise_failures(got, ref, 1e9, 1e9).tolist() == [True, False, False, True]


def test_shape_mismatch_is_an_error_naming_the_output():
    with pytest.raises(ValueError, match=r"mask_decoder.logits: shape \(2, 3\) differs from the reference's \(3, 2\)"):
        compare_tensors("mask_decoder", "logits", np.zeros((2, 3)), np.zeros((3, 2)), atol=1)


def test_table_rows_carry_errors_and_verdicts():
    checks = [compare_tensors("enc", "f16", np.ones(3), np.ones(3), atol=1e-3),
              compare_tensors("dec", "logits", np.ones(3) * 2, np.ones(3), atol=1e-3, objects=3)]
    lines = format_checks(checks, kinds=["random", "real"])
    assert lines[0] == "| inputs | graph | N | output | max abs | max rel | mean abs | ok |"
    assert lines[2] == "| random | enc |  | f16 | 0.00e+00 | 0.00e+00 | 0.00e+00 | yes |"
    assert lines[3] == "| real | dec | 3 | logits | 1.00e+00 | 1.00e+00 | 1.00e+00 | NO (3 of 3 > atol 0.001, rtol 0) |"
    assert format_checks(checks[:1])[2] == "| enc | f16 | 0.00e+00 | 0.00e+00 | 0.00e+00 | yes |"   # no N, no kinds


def test_mask_iou_object_ious_and_clip_ious():
    a = np.zeros((4, 4), np.int64)
    b = np.zeros((4, 4), np.int64)
    a[:2, :2] = 1                      # 4 pixels
    b[:2, :1] = 1                      # 2 of them
    b[3, 3] = 2                        # only in b
    assert mask_iou(a == 1, b == 1) == 0.5 and mask_iou(a == 9, b == 9) == 1.0
    assert object_ious(a, b) == [0.5, 0.0]
    assert object_ious(a, b, ids=[1, 7]) == [0.5, 1.0]       # a tracked object absent in both counts 1
    assert clip_ious([b, a], [a, b]) == [0.5, 0.0]            # first frame (the annotation) skipped
    assert clip_ious([b, a], [a, b], skip_first=False) == [0.5, 0.0, 0.5, 0.0]


def test_argmax_labels_and_agreement():
    p = np.zeros((3, 2, 2), np.float32)
    p[0, 0, 0] = p[1, 0, 1] = p[2, 1, :] = 1.0          # background, first object, second object
    assert argmax_labels(p, [5, 9]).tolist() == [[0, 5], [9, 9]]
    assert argmax_labels(p, [5, 300], np.uint16).dtype == np.uint16
    q = p.copy()
    q[1, 1, 0] = 2.0
    assert argmax_agreement(p, q) == 0.75
    diffs, agree = frame_agreement([p, p], [p, q])
    assert diffs == [0.0, 2.0] and agree == [1.0, 0.75]


def test_checks_from_polygraphy_runs_agree_with_polygraphy(tmp_path):
    """The TensorRT validation reads Polygraphy's RunResults into the shared comparator; on the CPU two
    ONNX Runtime runners (y = x and y = 1.0005 x + d) stand in for the engine and its reference."""
    pytest.importorskip("polygraphy")
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, CompareFunc

    from s3rt.runtime.backends.tensorrt.validate import checks_from_runs

    def graph(path, scale, shift):
        nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "d"], ["y"])]
        consts = [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
                  helper.make_tensor("d", TensorProto.FLOAT, [4], shift)]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], consts)
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        return OnnxrtRunner(SessionFromOnnx(BytesFromPath(str(path)), providers=["CPUExecutionProvider"]),
                            name=path.stem)

    runners = [graph(tmp_path / "engine.onnx", 1.0005, [0.0, 0.0, 0.0, 0.5]), graph(tmp_path / "ref.onnx", 1.0, [0.0] * 4)]
    # last element: |d| 0.502 and 12 % relative fails; at x = 10000 |d| 5.5 is 5.5e-4 relative and passes
    feeds = [{"x": np.array([1, 2, 3, 4], np.float32)}, {"x": np.array([1, 2, 3, 10000], np.float32)}]
    runs = Comparator.run(runners, data_loader=feeds)
    checks = checks_from_runs("toy", [1, 2], runs, atol=1e-3, rtol=1e-3)
    assert [(c.graph, c.objects, c.output) for c in checks] == [("toy", 1, "y"), ("toy", 2, "y")]
    polygraphy = Comparator.compare_accuracy(runs, compare_func=CompareFunc.simple(atol=1e-3, rtol=1e-3))
    if not hasattr(polygraphy, "items"):         # Polygraphy >= 0.53: a list, one result per compare function
        polygraphy = polygraphy[0]
    verdicts = [bool(it["y"]) for _, its in polygraphy.items() for it in its]
    assert [bool(c) for c in checks] == verdicts == [False, True]
    assert checks[0].failed == 1 and checks[0].max_abs == pytest.approx(0.502, rel=1e-4)
    assert checks[1].max_abs == pytest.approx(5.5, rel=1e-3) and checks[1].max_rel == pytest.approx(5.5e-4, rel=1e-3)


def test_stream_frame_check_and_nearest_mask_resize():
    """The one uint8-RGB frame check (offline pipeline, serving) and the one nearest mask resize."""
    frame = np.zeros((20, 30, 3), np.uint8)
    assert check_rgb8(frame, stream_hw=(20, 30)) is frame
    with pytest.raises(ShapeError, match=r"frame: expected a uint8 RGB array \(H, W, 3\), got float32 array"):
        check_rgb8(frame.astype(np.float32))
    with pytest.raises(ShapeError, match="grayscale"):
        check_rgb8(frame[..., 0])
    with pytest.raises(ShapeError, match=r"frame is 30x30 but the stream's frames are 20x30"):
        check_rgb8(np.zeros((30, 30, 3), np.uint8), stream_hw=(20, 30))
    with pytest.raises(ShapeError, match=r"image \(10, 12\) is too small"):
        check_rgb8(np.zeros((10, 12, 3), np.uint8))
    with pytest.raises(ShapeError, match=r"frame 7 is 16x16 but the stream's frames are 20x30"):
        check_rgb8(np.zeros((16, 16, 3), np.uint8), name="frame 7", stream_hw=(20, 30))
    mask = np.array([[0, 1], [2, 3]], np.int64)
    big = resize_index_mask(mask, (4, 6))
    assert big.dtype == np.int64 and set(np.unique(big)) == {0, 1, 2, 3}
    assert big[:2, :3].tolist() == [[0] * 3] * 2 and big[2:, 3:].tolist() == [[3] * 3] * 2
