"""The generated protobuf/gRPC modules for s3rt_serving.proto, produced on first import.

Nothing generated is committed: the first import runs grpc_tools.protoc (the `serve` extra) on
the .proto shipped in this package and writes `s3rt_serving_pb2.py` / `_pb2_grpc.py` into a cache
folder keyed by the .proto's hash and the grpcio-tools version ($S3RT_PROTO_CACHE, default
~/.cache/s3rt/proto/<key>/); later imports reuse it. A changed .proto regenerates by itself.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from s3rt.errors import MissingDependencyError

PROTO = Path(__file__).with_name("s3rt_serving.proto")
_MODULES: tuple[ModuleType, ModuleType] | None = None


def _cache_dir() -> Path:
    import grpc_tools
    version = getattr(grpc_tools, "__version__", None) or _dist_version("grpcio-tools")
    key = hashlib.sha256(PROTO.read_bytes() + version.encode()).hexdigest()[:16]
    root = Path(os.environ.get("S3RT_PROTO_CACHE") or Path.home() / ".cache" / "s3rt" / "proto")
    return root / key


def _dist_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


def _generate(out: Path) -> None:
    from grpc_tools import protoc
    include = Path(protoc.__file__).parent / "_proto"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent))       # generate aside, then rename: safe for concurrent imports
    rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={tmp}",
                      f"--grpc_python_out={tmp}", str(PROTO)])
    if rc != 0:
        raise MissingDependencyError(f"grpc_tools.protoc failed ({rc}) on {PROTO}")
    try:
        tmp.rename(out)
    except OSError:                                     # another process won the race
        pass


def load() -> tuple[ModuleType, ModuleType]:
    """(s3rt_serving_pb2, s3rt_serving_pb2_grpc), generating them on first use."""
    global _MODULES
    if _MODULES is not None:
        return _MODULES
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"serving needs grpcio and grpcio-tools: pip install 's3rt[serve]' ({exc})") from exc
    out = _cache_dir()
    if not (out / "s3rt_serving_pb2_grpc.py").is_file():
        try:
            _generate(out)
        except OSError:                                 # no writable home: generate under the temp folder
            out = Path(tempfile.gettempdir()) / "s3rt-proto" / out.name
            if not (out / "s3rt_serving_pb2_grpc.py").is_file():
                _generate(out)
    if str(out) not in sys.path:
        sys.path.append(str(out))                       # the grpc module imports its pb2 by top-level name
    _MODULES = (importlib.import_module("s3rt_serving_pb2"), importlib.import_module("s3rt_serving_pb2_grpc"))
    return _MODULES
