"""Issue 15 fixes that need no GPU: plugins in the manifest, builder flags, timing cache, ORT placement,
Polygraphy's comparison rule, the reference export for fused-plugin exports, extras metadata."""

from __future__ import annotations

import json
import logging
import sys
import tomllib

import numpy as np
import pytest
from onnx import TensorProto, helper

from s3rt.errors import BackendError, ConfigError, ModelFormatError
from s3rt.export.tensorrt.build import _save_timing_cache, builder_flags
from s3rt.runtime.backends.onnxruntime.backend import provider_list, shape_list
from s3rt.runtime.backends.onnxruntime.placement import build_session_with_placement, check_placement, parse_placement
from s3rt.runtime.contract import GRAPH_ORDER
from s3rt.runtime.backends.tensorrt.engines import load_engine_manifest, optimization_profiles
from s3rt.runtime.backends.tensorrt.plugins import PluginLibrary, check_plugins, format_library_version, require_fused_plugin
from tests.conftest import REPO
from tests.test_tensorrt import engine_manifest, tiny_manifest

# BuilderFlag member names of the real bindings (tensorrt_bindings/tensorrt.so string tables of
# tensorrt-cu12-bindings 10.16.1.11 and 11.4.0.106; tests/test_trt_api_conformance.py re-reads
# them from the wheels when the cache is present)
FLAGS_10_16 = frozenset({"FP16", "TF32", "OBEY_PRECISION_CONSTRAINTS", "STRONGLY_TYPED", "REFIT"})
FLAGS_11_4 = frozenset({"TF32", "REFIT"})


# -- engine manifest: plugins, bindings version, build number --------------------------------------
def test_manifest_records_plugins_and_bindings_version(tmp_path):
    lib = tmp_path / "libs3rt_trt_plugins.so"
    lib.write_bytes(b"\x7fELF plugin v1")
    rec = PluginLibrary.of(lib)
    m = engine_manifest(tmp_path, plugins=[rec.to_json()], bindings_version="10.16.1.11",
                        tensorrt_version="10.16.1.11")
    for g in GRAPH_ORDER:
        (tmp_path / f"{g}.engine").write_bytes(b"x")
    data = json.loads(m.save().read_text())
    assert data["plugins"] == [{"path": str(lib.resolve()), "sha256": rec.sha256}]
    assert data["bindings_version"] == "10.16.1.11"
    back = load_engine_manifest(tmp_path)
    assert back.plugins == data["plugins"] and back.extra == {}


def test_check_plugins_by_hash(tmp_path):
    lib = tmp_path / "a.so"
    lib.write_bytes(b"v1")
    recorded = [PluginLibrary.of(lib).to_json()]
    assert check_plugins(recorded, [], tmp_path) == [PluginLibrary.of(lib)]       # recorded path reused
    moved = tmp_path / "elsewhere.so"
    moved.write_bytes(b"v1")
    assert check_plugins(recorded, [PluginLibrary.of(moved)], tmp_path)[0].path == str(moved.resolve())
    other = tmp_path / "b.so"
    other.write_bytes(b"v2")
    with pytest.raises(BackendError, match=r"built with plugin libraries .*a\.so.*differ"):
        check_plugins(recorded, [PluginLibrary.of(other)], tmp_path)
    lib.write_bytes(b"v1 rebuilt")
    with pytest.raises(BackendError, match=r"changed since the engines .* were built"):
        check_plugins(recorded, [], tmp_path)
    lib.unlink()
    with pytest.raises(BackendError, match="missing; pass --plugin-lib"):
        check_plugins(recorded, [], tmp_path)
    with pytest.raises(BackendError, match="no such file"):
        PluginLibrary.of(tmp_path / "nope.so")


def test_fused_export_needs_plugin_lib():
    with pytest.raises(ModelFormatError, match=r"s3rt::MaskedQueryGather.*--plugin-lib"):
        require_fused_plugin({"custom_ops": ["s3rt::MaskedQueryGather"]}, [])
    require_fused_plugin({"custom_ops": ["s3rt::MaskedQueryGather"]}, ["x.so"])
    require_fused_plugin({}, [])


def test_library_version_has_build_number():
    assert format_library_version(10, 16, 1, 11) == "10.16.1.11"
    assert format_library_version(11, 4, 0, None) == "11.4.0"


# -- builder flags (TF32, constraints mode on 10.16 vs 11.4 enums) -----------------------------------
@pytest.mark.parametrize("precision, mode", [("fp32", "typed"), ("fp16", "typed"), ("fp16", "constraints")])
def test_tf32_cleared_in_every_build(precision, mode):
    on, off = builder_flags(precision, mode, FLAGS_10_16)
    assert off == ["TF32"]
    assert on == (["FP16", "OBEY_PRECISION_CONSTRAINTS"] if mode == "constraints" else [])


def test_constraints_mode_only_where_the_flags_exist():
    assert builder_flags("fp16", "typed", FLAGS_11_4) == ([], ["TF32"])
    with pytest.raises(ConfigError, match=r"FP16, OBEY_PRECISION_CONSTRAINTS.*removed in 11.*--fp16-mode typed"):
        builder_flags("fp16", "constraints", FLAGS_11_4)


# -- timing cache ---------------------------------------------------------------------------------
class _Cache:
    """Stand-in for ITimingCache that follows TensorRT's documented combine() contract:
    with ignore_mismatch=False a cache from another device/version is rejected (returns False)."""

    def __init__(self, device: str, entries: set[str]) -> None:
        self.device, self.entries = device, set(entries)
        self.calls: list[bool] = []

    def combine(self, other: "_Cache", ignore_mismatch: bool) -> bool:
        self.calls.append(ignore_mismatch)
        if other.device != self.device and not ignore_mismatch:
            return False
        self.entries |= other.entries
        return True

    def serialize(self) -> bytes:
        return json.dumps({"device": self.device, "entries": sorted(self.entries)}).encode()


class _Config:
    def create_timing_cache(self, data: bytes) -> _Cache:
        d = json.loads(data)
        return _Cache(d["device"], set(d["entries"]))


class _Builder:
    def create_builder_config(self) -> _Config:
        return _Config()


def test_timing_cache_merges_only_matching_caches(tmp_path, caplog):
    path = tmp_path / "trt.cache"
    path.write_bytes(_Cache("H200", {"old"}).serialize())
    ours = _Cache("H200", {"new"})
    _save_timing_cache(ours, path, _Builder(), lambda msg: None)
    assert ours.calls == [False]
    assert json.loads(path.read_bytes())["entries"] == ["new", "old"]

    path.write_bytes(_Cache("Orin", {"foreign"}).serialize())
    ours = _Cache("H200", {"new"})
    with caplog.at_level(logging.WARNING):
        _save_timing_cache(ours, path, _Builder(), lambda msg: None)
    assert ours.calls == [False]
    assert json.loads(path.read_bytes())["entries"] == ["new"]          # foreign entries not pulled in
    assert "another TensorRT version or GPU: not merged" in caplog.text


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


# -- extras: matched TensorRT / cuda-bindings / onnxruntime-gpu sets --------------------------------
def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _name(req: str) -> str:
    import re
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


@pytest.mark.parametrize("cuda", ["12", "13"])
def test_tensorrt_extras_pin_one_cuda_major(cuda):
    from packaging.requirements import Requirement
    reqs = {_name(r): Requirement(r) for r in _extras()[f"tensorrt-cu{cuda}"]}
    assert f"tensorrt-cu{cuda}" in reqs and "tensorrt" not in reqs
    bindings = reqs["cuda-bindings"].specifier
    assert bindings.contains(f"{cuda}.9.0") and not bindings.contains(f"{int(cuda) + 1}.0.0")
    assert not bindings.contains(f"{int(cuda) - 1}.9.0")
    if cuda == "12":
        assert not bindings.contains("12.6.0") and bindings.contains("12.6.1")   # cuda.bindings.runtime
    assert "onnxruntime" not in reqs and "cuda-python" not in reqs


def test_onnxruntime_gpu_extra_has_no_cpu_onnxruntime():
    extras = _extras()
    gpu = {_name(r) for r in extras["onnxruntime-gpu"]}
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    for name, reqs in extras.items():
        names = {_name(r) for r in reqs}
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"extra {name} pulls both onnxruntime builds"
        if name.startswith("tensorrt"):
            assert "onnxruntime" not in names, f"extra {name} would replace onnxruntime-gpu with the CPU build"


def test_cuda_pairing_message_with_real_bindings(tmp_path):
    """cuda-bindings from the cache (see test_trt_api_conformance) on this driverless machine."""
    from tests.test_trt_api_conformance import cuda_bindings_dirs
    dirs = cuda_bindings_dirs()
    if not dirs:
        pytest.skip("no cached cuda-bindings wheels (run `make trt-bindings`)")
    import subprocess
    for d in dirs:
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from cuda.bindings import runtime as r; "
                "from s3rt.runtime.backends.cuda import env as cuda_env; err, n = r.cudaGetDeviceCount(); "
                "print(err.name); print(cuda_env.explain(r, err))")
        out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        err, text = out.stdout.strip().splitlines()
        major = d.name.split("-")[-1].split(".")[0]
        assert f"cuda-bindings {major}." in text and f"CUDA runtime {major}." in text
        if err != "cudaSuccess":
            assert "no NVIDIA driver is loaded" in text or "older than the runtime" in text
