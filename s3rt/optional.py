"""Lazy, loud optional imports: one place owns torch, onnxruntime, tensorrt, cuda-python, ...

``optional("tensorrt", extra="tensorrt", min_version="10")`` returns a proxy; the first
attribute access imports the module or raises MissingDependencyError naming the feature, the
pip extra and the original import error. ``is_available`` never imports the module.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from s3rt.errors import MissingDependencyError


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("+")[0].split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


class OptionalModule:
    """Proxy that imports ``name`` on first attribute access."""

    def __init__(self, name: str, *, extra: str | None = None, min_version: str | None = None,
                 hint: str | None = None) -> None:
        self._name = name
        self._extra = extra
        self._min_version = min_version
        self._hint = hint
        self._module: ModuleType | None = None

    def is_available(self) -> bool:
        """True if the module can be found; does not import it."""
        if self._module is not None:
            return True
        try:
            return importlib.util.find_spec(self._name) is not None
        except (ImportError, ValueError):
            return False

    def load(self) -> ModuleType:
        if self._module is None:
            try:
                module = importlib.import_module(self._name)
            except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
                raise MissingDependencyError(self._message(f"import failed: {exc!r}")) from exc
            if self._min_version is not None:
                have = getattr(module, "__version__", "0")
                if _version_tuple(have) < _version_tuple(self._min_version):
                    raise MissingDependencyError(
                        self._message(f"found version {have}, need >= {self._min_version}"))
            self._module = module
        return self._module

    def _message(self, why: str) -> str:
        how = f'pip install "s3rt[{self._extra}]"' if self._extra else f"pip install {self._name}"
        if self._hint:
            how = f"{how} ({self._hint})"
        return f"optional dependency '{self._name}' is needed here but unavailable ({why}); install it: {how}"

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.load(), attr)


def optional(name: str, *, extra: str | None = None, min_version: str | None = None,
             hint: str | None = None) -> OptionalModule:
    return OptionalModule(name, extra=extra, min_version=min_version, hint=hint)


torch = optional("torch", extra="export")
onnx = optional("onnx", extra="export")
onnxruntime = optional("onnxruntime", extra="onnxruntime", min_version="1.16")
tensorrt = optional("tensorrt", extra="tensorrt-cu12", min_version="10",
                    hint="s3rt[tensorrt-cu13] on CUDA 13 drivers; on Jetson use JetPack's python3-libnvinfer")
cuda_bindings = optional("cuda.bindings.runtime", extra="tensorrt-cu12",
                         hint="cuda-bindings >= 12.6.1 matching the driver's CUDA major: s3rt[tensorrt-cu13] on CUDA 13")
av = optional("av", extra="video")
cv2 = optional("cv2", extra="video")
