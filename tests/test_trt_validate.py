"""TensorRT validation helpers without TensorRT: Polygraphy's element-wise comparison rule and the
plain reference export for fused-plugin exports."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.errors import ConfigError
from s3rt.runtime.contract import GRAPH_ORDER
from tests.test_tensorrt import tiny_manifest


# -- validate_trt: Polygraphy's rule and the reference export ----------------------------------------
def test_elementwise_failures_match_polygraphy():
    pytest.importorskip("polygraphy")
    from polygraphy.comparator import CompareFunc
    from polygraphy.comparator.struct import IterationResult
    from s3rt.runtime.backends.tensorrt.validate import elementwise_failures
    rng = np.random.default_rng(0)
    b = rng.normal(size=2000).astype(np.float32) * 10
    a = b + rng.normal(size=2000).astype(np.float32) * 1e-2
    a[0], b[0] = 100.002, 100.0                # absdiff 2e-3 > atol but reldiff 2e-5 < rtol: passes
    a[1], b[1] = 2e-4, 0.0                     # x/0: infinitely far relatively, but within atol: passes
    atol = rtol = 1e-3
    ours = elementwise_failures(a, b, atol, rtol)
    assert not ours[0] and not ours[1]
    for sl in (slice(0, 2), slice(0, 2000)):
        cmp = CompareFunc.simple(atol=atol, rtol=rtol, check_error_stat="elemwise")(
            IterationResult({"y": a[sl]}, runner_name="trt"), IterationResult({"y": b[sl]}, runner_name="ort"))
        assert bool(cmp["y"]) == (not ours[sl].any())
    # one element that is off by both measures fails both
    a2 = b.copy()
    a2[5] = b[5] + 1.0 + abs(b[5])
    cmp = CompareFunc.simple(atol=atol, rtol=rtol, check_error_stat="elemwise")(
        IterationResult({"y": a2}, runner_name="trt"), IterationResult({"y": b}, runner_name="ort"))
    assert not bool(cmp["y"]) and elementwise_failures(a2, b, atol, rtol).sum() == 1


def test_fused_plugin_export_is_compared_against_a_plain_reference(tmp_path):
    from s3rt.runtime.backends.tensorrt.validate import _reference_dir
    import dataclasses
    fused = dataclasses.replace(tiny_manifest(tmp_path / "fused"), extra={"custom_ops": ["s3rt::MaskedQueryGather"]})
    (tmp_path / "fused").mkdir()
    fused.save()
    plain = tiny_manifest(tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    plain.save()
    for d in ("fused", "plain"):
        for g in GRAPH_ORDER:
            (tmp_path / d / f"{g}.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="ONNX Runtime cannot run; pass --reference-model"):
        _reference_dir(tmp_path / "fused", None)
    assert _reference_dir(tmp_path / "fused", tmp_path / "plain") == tmp_path / "plain"
    assert _reference_dir(tmp_path / "plain", None) == tmp_path / "plain"
    with pytest.raises(ConfigError, match="export it without --fused-attention-plugin"):
        _reference_dir(tmp_path / "fused", tmp_path / "fused")
