"""The GPU extras in pyproject.toml resolve to matched sets (issue 24, defect 1), checked offline.

Each extra's requirement set is resolved from pyproject.toml with `packaging` (self-references
such as ``s3rt[onnxruntime-gpu-cu12]`` expanded, specifiers of one package intersected) and the
pairings are checked against the published wheels' facts:
- onnxruntime-gpu on PyPI is a CUDA 12 build up to 1.26 and a CUDA 13 build from 1.27.0
  (1.31.1 needs libcudart.so.13, libcublasLt.so.13);
- cuda-bindings N.x is the CUDA N runtime (cuda.bindings.runtime from 12.6.1);
- tensorrt-cuNN is TensorRT for CUDA NN; TensorRT 11 ships libnvinfer.so.11, while ONNX Runtime's
  TensorRT provider loads libnvinfer.so.10, so any extra with both must stay below 11.
"""

from __future__ import annotations

import re
import sys

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:                                                # Python 3.10 (JetPack 6): the dev extra brings tomli
    tomllib = pytest.importorskip("tomli")

# versions that exist (or stand for a release line) on PyPI, to probe the specifiers with
ORT_GPU_VERSIONS = ["1.19.0", "1.19.2", "1.20.1", "1.21.0", "1.22.0", "1.23.2", "1.24.1", "1.25.0", "1.26.0",
                    "1.27.0", "1.28.0", "1.30.0", "1.31.1"]
CUDA_BINDINGS_VERSIONS = ["12.6.0", "12.6.1", "12.8.0", "12.9.4", "13.0.0", "13.5.0", "14.0.0"]
TENSORRT_VERSIONS = ["10.3.0", "10.13.0", "10.16.1.11", "11.0.0", "11.4.0.106"]


def ort_gpu_cuda_major(version: str) -> int:
    """CUDA major of PyPI's onnxruntime-gpu wheel `version` (CUDA 13 builds from 1.27.0)."""
    from packaging.version import Version
    return 13 if Version(version) >= Version("1.27.0") else 12


def extras() -> dict[str, list[str]]:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["optional-dependencies"]


def resolve(extra: str, table: dict[str, list[str]] | None = None, _seen: frozenset = frozenset()) -> dict[str, SpecifierSet]:
    """package -> combined specifier of everything `pip install "s3rt[extra]"` asks for (markers for
    this interpreter applied, s3rt[...] self-references followed)."""
    table = extras() if table is None else table
    if extra not in table:
        raise KeyError(f"pyproject.toml has no extra '{extra}' (has: {', '.join(table)})")
    if extra in _seen:
        raise ValueError(f"extra '{extra}' refers to itself through {sorted(_seen)}")
    out: dict[str, SpecifierSet] = {}
    for text in table[extra]:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        if name == "s3rt":
            parts = [resolve(e, table, _seen | {extra}) for e in sorted(req.extras)]
        else:
            parts = [{name: req.specifier}]
        for part in parts:
            for pkg, spec in part.items():
                out[pkg] = out.get(pkg, SpecifierSet()) & spec
    return out


def allowed(spec: SpecifierSet, versions: list[str]) -> list[str]:
    return [v for v in versions if spec.contains(v, prereleases=True)]


def cuda_majors(reqs: dict[str, SpecifierSet]) -> dict[str, set[int]]:
    """What each GPU package of a resolved set pins the CUDA major to."""
    majors: dict[str, set[int]] = {}
    if "cuda-bindings" in reqs:
        majors["cuda-bindings"] = {int(v.split(".")[0]) for v in allowed(reqs["cuda-bindings"], CUDA_BINDINGS_VERSIONS)}
    if "onnxruntime-gpu" in reqs:
        majors["onnxruntime-gpu"] = {ort_gpu_cuda_major(v) for v in allowed(reqs["onnxruntime-gpu"], ORT_GPU_VERSIONS)}
    for pkg in reqs:
        m = re.fullmatch(r"tensorrt-cu(\d+)", pkg)
        if m:
            majors[pkg] = {int(m.group(1))}
    return majors


def _is_gpu_set(reqs: dict[str, SpecifierSet]) -> bool:
    return any(pkg in ("cuda-bindings", "onnxruntime-gpu") or pkg.startswith("tensorrt") for pkg in reqs)


GPU_EXTRAS = [name for name in extras() if name != "dev" and _is_gpu_set(resolve(name))]
ORT_TRT_EXTRAS = [name for name in GPU_EXTRAS
                  if "onnxruntime-gpu" in resolve(name) and any(p.startswith("tensorrt") for p in resolve(name))]


def test_every_gpu_extra_is_listed_and_resolves():
    assert {"tensorrt", "tensorrt-cu12", "tensorrt-cu13", "onnxruntime-gpu", "onnxruntime-gpu-cu12",
            "onnxruntime-gpu-cu13", "onnxruntime-trt-cu12", "onnxruntime-trt-cu13"} <= set(GPU_EXTRAS)
    assert set(ORT_TRT_EXTRAS) == {"onnxruntime-trt-cu12", "onnxruntime-trt-cu13"}
    for name in GPU_EXTRAS:
        assert resolve(name), name


@pytest.mark.parametrize("name", GPU_EXTRAS)
def test_gpu_extra_pins_one_cuda_major(name):
    reqs = resolve(name)
    majors = cuda_majors(reqs)
    assert "cuda-bindings" in majors, f"{name}: no cuda-bindings (GPU buffers need cuda.bindings.runtime)"
    for pkg, found in majors.items():
        assert found, f"{name}: {pkg} {reqs.get(pkg, '')} allows no published version"
    union = set().union(*majors.values())
    assert len(union) == 1, f"{name}: mixes CUDA majors {majors}"
    if union == {12}:
        assert not reqs["cuda-bindings"].contains("12.6.0") and reqs["cuda-bindings"].contains("12.6.1")


@pytest.mark.parametrize("name", ORT_TRT_EXTRAS)
def test_onnxruntime_tensorrt_provider_gets_tensorrt_10(name):
    reqs = resolve(name)
    trt = [pkg for pkg in reqs if pkg.startswith("tensorrt")]
    for pkg in trt:
        ok = allowed(reqs[pkg], TENSORRT_VERSIONS)
        assert ok and all(v.startswith("10.") for v in ok), f"{name}: {pkg}{reqs[pkg]} allows {ok}"


def test_the_audit_pairings():
    """The two combinations the audit found broken resolve to matched sets now."""
    cu12 = resolve("onnxruntime-gpu")                       # the plain name: the CUDA 12 set
    assert allowed(cu12["onnxruntime-gpu"], ORT_GPU_VERSIONS)[-1] == "1.26.0"
    cu13 = resolve("onnxruntime-gpu-cu13")
    assert "1.31.1" in allowed(cu13["onnxruntime-gpu"], ORT_GPU_VERSIONS)
    assert allowed(cu13["cuda-bindings"], CUDA_BINDINGS_VERSIONS) == ["13.0.0", "13.5.0"]
    assert allowed(resolve("onnxruntime-trt-cu12")["tensorrt-cu12"], TENSORRT_VERSIONS) == ["10.3.0", "10.13.0",
                                                                                             "10.16.1.11"]
    # the TensorRT backend alone may use TensorRT 11 (its build handles both)
    assert "11.4.0.106" in allowed(resolve("tensorrt-cu12")["tensorrt-cu12"], TENSORRT_VERSIONS)


def test_no_extra_pulls_both_onnxruntime_builds():
    for name in extras():
        names = set(resolve(name))
        assert not {"onnxruntime", "onnxruntime-gpu"} <= names, f"extra {name} pulls both onnxruntime builds"
        if name.startswith("tensorrt"):
            assert "onnxruntime" not in names, f"extra {name} would replace onnxruntime-gpu with the CPU build"
    # and the combinations the docs recommend stay single-build
    for combo in (("tensorrt-cu12", "onnxruntime-gpu-cu12"), ("tensorrt-cu13", "onnxruntime-gpu-cu13")):
        merged = {**resolve(combo[0]), **resolve(combo[1])}
        assert "onnxruntime" not in merged


def test_resolver_follows_references_and_intersects():
    table = {"a": ["x>=1", "s3rt[b]"], "b": ["x<2", "y; python_version < '3'"], "loop": ["s3rt[loop]"]}
    got = resolve("a", table)
    assert set(got) == {"x"} and got["x"].contains("1.5") and not got["x"].contains("2.0")
    with pytest.raises(ValueError, match="refers to itself"):
        resolve("loop", table)
    with pytest.raises(KeyError, match="no extra 'nope'"):
        resolve("nope", table)
