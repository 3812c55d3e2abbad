"""TensorRT builder configuration without TensorRT: which BuilderFlags each precision sets and
clears on the 10.16 and 11.4 enums, and the timing cache merge rule."""

from __future__ import annotations

import json
import logging

import pytest

from s3rt.errors import BackendError, ConfigError
from s3rt.export.tensorrt.build import SharedTimingCache, _save_timing_cache, builder_flags

# BuilderFlag member names of the real bindings (tensorrt_bindings/tensorrt.so string tables of
# tensorrt-cu12-bindings 10.16.1.11 and 11.4.0.106; tests/test_trt_api_conformance.py re-reads
# them from the wheels when the cache is present)
FLAGS_10_16 = frozenset({"FP16", "TF32", "OBEY_PRECISION_CONSTRAINTS", "STRONGLY_TYPED", "REFIT"})
FLAGS_11_4 = frozenset({"TF32", "REFIT"})


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
    """IBuilderConfig's timing-cache calls on a `device`: an empty buffer makes an empty cache of this
    device; set_timing_cache(ignore_mismatch=False) refuses a cache of another device."""

    def __init__(self, device: str = "H200") -> None:
        self.device, self.attached = device, None

    def create_timing_cache(self, data: bytes) -> _Cache:
        if not data:
            return _Cache(self.device, set())
        d = json.loads(data)
        return _Cache(d["device"], set(d["entries"]))

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        if cache.device != self.device and not ignore_mismatch:
            return False
        self.attached = cache
        return True


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


def test_one_timing_cache_for_every_graph_of_a_build(tmp_path, caplog):
    path = tmp_path / "trt.cache"
    path.write_bytes(_Cache("Orin", {"foreign"}).serialize())
    said: list[str] = []
    timing = SharedTimingCache(path, said.append)
    assert said == [f"timing cache: loaded {len(path.read_bytes())} bytes from {path}"]
    first, second = _Config(), _Config()
    with caplog.at_level(logging.WARNING):
        timing.attach(first, "encoder")                         # Orin's cache on an H200: start empty
    assert "does not match this TensorRT/GPU; building with an empty one" in caplog.text
    assert first.attached is timing.cache and timing.cache.device == "H200" and not timing.cache.entries
    timing.attach(second, "mask_decoder")
    assert second.attached is first.attached                    # shared, not recreated per graph
    timing.cache.entries.add("tactic")
    timing.save(_Builder())
    assert json.loads(path.read_bytes()) == {"device": "H200", "entries": ["tactic"]}   # the foreign file replaced
    with pytest.raises(BackendError, match="mask_decoder: TensorRT refused the timing cache it created itself"):
        timing.attach(_Config("A100"), "mask_decoder")
    assert SharedTimingCache(None, said.append).save(_Builder()) is None and len(said) == 2
