"""TensorRT plugins and library version: load plugin libraries, check plugin init, read the loaded lib's version.

Engines that contain a custom layer (s3rt's MaskedQueryGather, built by CMake as
libs3rt_trt_plugins.so) can only be parsed and deserialized after the library that registers the
layer's creator is loaded into TensorRT's plugin registry. `load_plugin_libraries` does that,
before parsing and before deserializing, and returns a `PluginLibrary` (path + sha256) per file;
`s3rt build` records them in engine_manifest.json and `check_plugins` refuses, at load, a plugin
library that differs from the one the engines were built with.

`library_version` reads the version of the libnvinfer actually loaded (getInferLib*Version,
C API), which is what an engine is tied to: the Python bindings' `__version__` can differ from
it (pip bindings beside a system TensorRT). The pure parts take plain values so they are tested
without TensorRT.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s3rt.errors import BackendError, ModelFormatError
from s3rt.runtime.manifest import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginLibrary:
    """A plugin library an engine depends on: where it was loaded from and its sha256."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> "PluginLibrary":
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise BackendError(f"--plugin-lib {path}: no such file (build it with `make kernels`: "
                               "build/libs3rt_trt_plugins.so)")
        return cls(str(p), file_sha256(p))

    def to_json(self) -> dict:
        return asdict(self)


def init_nvidia_plugins(trt: Any, logger: Any) -> None:
    """Register NVIDIA's plugins (libnvinfer_plugin); raise if TensorRT reports failure."""
    if not trt.init_libnvinfer_plugins(logger, ""):
        raise BackendError(f"TensorRT {trt.__version__}: init_libnvinfer_plugins failed (libnvinfer_plugin missing "
                           "or from another TensorRT version?); engines using NVIDIA plugins cannot load")


def load_plugin_libraries(trt: Any, paths: list[str | Path] | tuple[str | Path, ...]) -> list[PluginLibrary]:
    """Load each plugin library into TensorRT's plugin registry (before parsing/deserializing)."""
    records = [PluginLibrary.of(p) for p in paths]
    registry = trt.get_plugin_registry()
    for rec in records:
        try:
            handle = registry.load_library(rec.path)
        except Exception as exc:  # noqa: BLE001 - the bindings raise plain RuntimeError/TypeError
            raise BackendError(f"TensorRT could not load plugin library {rec.path}: {exc}") from exc
        if handle is None:
            raise BackendError(f"TensorRT could not load plugin library {rec.path} (built for another TensorRT "
                               "version? see the TensorRT log above)")
        log.info("loaded TensorRT plugin library %s (sha256 %s)", rec.path, rec.sha256[:12])
    return records


def check_plugins(recorded: list[dict], given: list[PluginLibrary], engine_dir: Path) -> list[PluginLibrary]:
    """The plugin libraries to load for engines that recorded `recorded`; raise on a mismatch.

    With no --plugin-lib given, the recorded paths are used when their files still hash the same.
    Given libraries must match the recorded ones by sha256 (paths may differ between machines).
    """
    want = [PluginLibrary(str(r["path"]), str(r["sha256"])) for r in recorded]
    if not given:
        out = []
        for rec in want:
            p = Path(rec.path)
            if not p.is_file():
                raise BackendError(f"engines in {engine_dir} need the plugin library {rec.path}, which is missing; "
                                   "pass --plugin-lib PATH (the library they were built with)")
            if file_sha256(p) != rec.sha256:
                raise BackendError(f"plugin library {rec.path} changed since the engines in {engine_dir} were built "
                                   f"(sha256 {rec.sha256[:12]}...); rebuild with `s3rt build --plugin-lib {rec.path}`")
            out.append(rec)
        return out
    have = {g.sha256: g for g in given}
    missing = [r for r in want if r.sha256 not in have]
    if missing:
        raise BackendError(f"engines in {engine_dir} were built with plugin libraries "
                           f"{[f'{r.path} (sha256 {r.sha256[:12]}...)' for r in missing]}; the --plugin-lib given "
                           f"{[f'{g.path} (sha256 {g.sha256[:12]}...)' for g in given]} differ; rebuild or pass "
                           "the same library")
    return given


# -- version of the loaded libnvinfer ----------------------------------------------------------------
def format_library_version(major: int, minor: int, patch: int, build: int | None) -> str:
    """"10.16.1.11" from the four getInferLib*Version() numbers (build None: three parts)."""
    parts = [major, minor, patch] + ([build] if build is not None else [])
    return ".".join(str(int(p)) for p in parts)


def library_version(trt: Any) -> str:
    """Version of the libnvinfer loaded by `trt` (falls back to the bindings' version, with a warning)."""
    major = str(trt.__version__).split(".")[0]
    try:
        lib = ctypes.CDLL(f"libnvinfer.so.{major}", mode=ctypes.RTLD_GLOBAL)   # the one the bindings loaded
        calls = [getattr(lib, f"getInferLib{n}Version") for n in ("Major", "Minor", "Patch", "Build")]
        for c in calls:
            c.restype = ctypes.c_int32
        version = format_library_version(*(c() for c in calls))
    except (OSError, AttributeError) as exc:
        log.warning("cannot read libnvinfer's own version (%s); using the Python bindings' %s", exc, trt.__version__)
        return str(trt.__version__)
    if version != str(trt.__version__):
        log.warning("TensorRT Python bindings %s run on libnvinfer %s; engines are tied to the library",
                    trt.__version__, version)
    return version


def require_fused_plugin(manifest_extra: dict, plugin_libs: list[str | Path] | tuple[str | Path, ...]) -> None:
    """An export with s3rt custom ops cannot be parsed without --plugin-lib: say so before TensorRT does."""
    custom = [op for op in manifest_extra.get("custom_ops", []) if op.startswith("s3rt::")]
    if custom and not plugin_libs:
        raise ModelFormatError(f"this export contains s3rt custom ops {custom} (exported with "
                               "--fused-attention-plugin); pass --plugin-lib build/libs3rt_trt_plugins.so "
                               "(built by `make kernels`)")


__all__ = ["PluginLibrary", "check_plugins", "format_library_version", "init_nvidia_plugins", "library_version",
           "load_plugin_libraries", "require_fused_plugin"]
