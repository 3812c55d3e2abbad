"""Plugin libraries in the engine manifest (path + sha256, checked at open), the fused-attention
plugin requirement, and TensorRT's four-number library version."""

from __future__ import annotations

import json

import pytest

from s3rt.errors import BackendError, ModelFormatError
from s3rt.runtime.backends.tensorrt.engines import load_engine_manifest
from s3rt.runtime.backends.tensorrt.plugins import PluginLibrary, check_plugins, format_library_version, require_fused_plugin
from s3rt.runtime.contract import GRAPH_ORDER
from tests.test_tensorrt import engine_manifest


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
