"""``s3rt::masked_query_gather``: torch custom op, fused CUDA kernel loader, ONNX export paths.

The op's semantics are :func:`reference.masked_query_gather_torch` (see ``reference.py``)::

    gathered, index = masked_query_gather(pixel, query_key, foreground, num_heads)
    # pixel (BN, P, C) float, query_key (BN, Q, C) float (L2-normalised), foreground (BN, P) bool
    # -> gathered (BN, Q, C) in pixel's dtype, index (BN, num_heads, Q) int64

Implementations registered for the op:

* every device except CUDA (CPU included): the torch reference;
* CUDA: the fused kernel of ``masked_query_gather.cu`` when :func:`is_cuda_kernel_available`
  (compiled lazily, on first use, with ``torch.utils.cpp_extension.load``; never attempted on a
  CPU-only torch) and the shape is supported (:func:`kernel_supports`), else the reference;
* fake/meta: shapes and dtypes only, for tracing and ``torch.export``.

ONNX. The model calls the reference directly, so the default export is standard ONNX ops. To
export the op as one custom node for the TensorRT plugin ``MaskedQueryGather`` (namespace
``s3rt``, version ``1``), call the op in the traced code and use :func:`onnx_translation_table`
(``torch.onnx.export(..., dynamo=True, custom_translation_table=...)``) or, with the legacy
TorchScript exporter, :func:`register_onnx_symbolic`. The emitted subgraph is::

    fg_i32          = Cast(foreground, to=INT32)          # TensorRT plugins take no bool tensors
    gathered, idx32 = s3rt::MaskedQueryGather(pixel, query_key, fg_i32,
                          num_heads=H, plugin_namespace="s3rt", plugin_version="1")
    index           = Cast(idx32, to=INT64)

:func:`decompose_to_reference` turns the op back into the reference's aten ops in an
``ExportedProgram`` (standard-op ONNX for a model that calls the op).

Importing this module registers the op (it needs torch); it never compiles anything.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import torch

from s3rt.errors import MissingDependencyError
from s3rt.kernels.masked_query_attention import reference

__all__ = [
    "ONNX_DOMAIN", "ONNX_OP_TYPE", "ONNX_OP_VERSION", "PLUGIN_NAMESPACE", "PLUGIN_VERSION",
    "masked_query_gather", "is_cuda_kernel_available", "kernel_supports", "load_cuda_extension",
    "onnx_translation_table", "register_onnx_symbolic", "decompose_to_reference",
]

log = logging.getLogger(__name__)

OP_NAME = "s3rt::masked_query_gather"
ONNX_DOMAIN = "s3rt"
ONNX_OP_TYPE = "MaskedQueryGather"
ONNX_OP_VERSION = 1          # opset version of the "s3rt" domain
PLUGIN_NAMESPACE = "s3rt"    # TensorRT plugin namespace (node attribute plugin_namespace)
PLUGIN_VERSION = "1"         # TensorRT plugin version (node attribute plugin_version)

KERNEL_SOURCE = Path(__file__).with_name("masked_query_gather.cu")
_EXTENSION_NAME = "s3rt_masked_query_gather_ext"
_DISABLE_ENV = "S3RT_DISABLE_CUDA_KERNELS"  # "1": never build/use the fused kernel

_KERNEL_CHANNELS = 256
_KERNEL_HEADS = (1, 2, 4, 8, 16, 32)


# ----------------------------------------------------------------------------------------------
# the op
# ----------------------------------------------------------------------------------------------

@torch.library.custom_op(OP_NAME, mutates_args=())
def masked_query_gather(pixel: torch.Tensor, query_key: torch.Tensor, foreground: torch.Tensor,
                        num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked discriminative-query gather (spec 9.4.1): see ``reference.py``.

    pixel (BN, P, C), query_key (BN, Q, C), foreground (BN, P) bool
    -> gathered (BN, Q, C) in pixel's dtype, index (BN, num_heads, Q) int64.
    """
    return reference.masked_query_gather_torch(pixel, query_key, foreground, num_heads)


@masked_query_gather.register_kernel("cuda")
def _masked_query_gather_cuda(pixel: torch.Tensor, query_key: torch.Tensor, foreground: torch.Tensor,
                              num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    reference._check_sizes(pixel.shape, query_key.shape, foreground.shape, num_heads)
    if (pixel.dtype in (torch.float32, torch.float16) and query_key.dtype == pixel.dtype
            and kernel_supports(pixel.shape[-1], num_heads) and is_cuda_kernel_available()):
        return _EXTENSION.module.masked_query_gather(pixel, query_key, foreground, int(num_heads))
    return reference.masked_query_gather_torch(pixel, query_key, foreground, num_heads)


@masked_query_gather.register_fake
def _masked_query_gather_fake(pixel: torch.Tensor, query_key: torch.Tensor, foreground: torch.Tensor,
                              num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch._check(pixel.dim() == 3 and query_key.dim() == 3 and foreground.dim() == 2,
                 lambda: "masked_query_gather: expected pixel (BN, P, C), query_key (BN, Q, C), foreground (BN, P)")
    bn, _, c = pixel.shape
    q = query_key.shape[1]
    torch._check(c % num_heads == 0, lambda: f"masked_query_gather: num_heads {num_heads} must divide C = {c}")
    gathered = pixel.new_empty((bn, q, c))                                  # (BN, Q, C)
    index = pixel.new_empty((bn, num_heads, q), dtype=torch.int64)          # (BN, H, Q)
    return gathered, index


# ----------------------------------------------------------------------------------------------
# the compiled CUDA extension (lazy)
# ----------------------------------------------------------------------------------------------

def kernel_supports(channels: int, num_heads: int) -> bool:
    """True when the fused kernel handles these sizes (C == 256, H in 1..32 powers of two)."""
    return int(channels) == _KERNEL_CHANNELS and int(num_heads) in _KERNEL_HEADS


class _LazyExtension:
    """Builds and loads the extension once, on first use; remembers a failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module: Any = None
        self._error: Exception | None = None

    @property
    def module(self) -> Any:
        if self._module is None:
            self.load()
        return self._module

    def load(self, *, verbose: bool = False) -> Any:
        with self._lock:
            if self._module is not None:
                return self._module
            if self._error is not None:
                raise self._error
            why = _cuda_build_unavailable_reason()
            if why is not None:
                self._error = MissingDependencyError(f"fused masked_query_gather kernel unavailable: {why}")
                raise self._error
            try:
                from torch.utils.cpp_extension import load

                log.info("building %s from %s (first use; cached afterwards)", _EXTENSION_NAME, KERNEL_SOURCE)
                self._module = load(
                    name=_EXTENSION_NAME,
                    sources=[str(KERNEL_SOURCE)],
                    extra_include_paths=[str(KERNEL_SOURCE.parent)],
                    extra_cuda_cflags=["-O3"],  # torch adds its own -std, arch and half-type flags
                    verbose=verbose,
                )
            except Exception as exc:  # noqa: BLE001 - compiler/loader failures of any kind
                self._error = MissingDependencyError(
                    f"fused masked_query_gather kernel failed to build from {KERNEL_SOURCE}: {exc}; "
                    f"the op falls back to the torch reference (set {_DISABLE_ENV}=1 to skip the build)")
                self._error.__cause__ = exc
                raise self._error
            return self._module

    def available(self) -> bool:
        try:
            self.module
        except MissingDependencyError as exc:
            log.debug("%s", exc)
            return False
        return True


def _cuda_build_unavailable_reason() -> str | None:
    """Why the extension cannot be built here, or None. Never compiles anything."""
    if os.environ.get(_DISABLE_ENV, "") == "1":
        return f"disabled by {_DISABLE_ENV}=1"
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    if not torch.cuda.is_available():
        return "no CUDA device is visible"
    if not KERNEL_SOURCE.is_file():
        return f"kernel source {KERNEL_SOURCE} is missing"
    return None


_EXTENSION = _LazyExtension()


def is_cuda_kernel_available() -> bool:
    """True when the fused CUDA kernel can run here.

    On a CUDA machine the first call compiles the extension (about a minute, then cached by
    torch); on CPU-only torch, or without a visible GPU, it returns False without compiling.
    """
    if _cuda_build_unavailable_reason() is not None:
        return False
    return _EXTENSION.available()


def load_cuda_extension(*, verbose: bool = False) -> Any:
    """Build (if needed) and return the extension module; raises MissingDependencyError with the reason."""
    return _EXTENSION.load(verbose=verbose)


# ----------------------------------------------------------------------------------------------
# ONNX: custom node for the TensorRT plugin
# ----------------------------------------------------------------------------------------------

def _onnx_schema():
    """OpSchema of s3rt::MaskedQueryGather (not registered globally; only used while exporting)."""
    from onnx.defs import OpSchema

    return OpSchema(
        ONNX_OP_TYPE, ONNX_DOMAIN, ONNX_OP_VERSION,
        doc="Masked discriminative-query gather (s3rt kernels/masked_query_attention/reference.py); "
            "TensorRT plugin MaskedQueryGather, namespace s3rt, version 1.",
        inputs=[
            OpSchema.FormalParameter("pixel", "T", "(BN, P, C) pixel tokens + embedding, not normalised"),
            OpSchema.FormalParameter("query_key", "T", "(BN, Q, C) L2-normalised query keys"),
            OpSchema.FormalParameter("foreground", "tensor(int32)", "(BN, P) nonzero = foreground"),
        ],
        outputs=[
            OpSchema.FormalParameter("gathered", "T", "(BN, Q, C) gathered normalised pixel slices"),
            OpSchema.FormalParameter("index", "tensor(int32)", "(BN, num_heads, Q) argmax pixel per head"),
        ],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "pixel/query dtype")],
        attributes=[
            OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of channel heads"),
            OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace"),
            OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "TensorRT plugin version"),
        ],
    )


def onnx_translation_table() -> dict[Callable, Callable]:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: the op -> one
    ``s3rt::MaskedQueryGather`` node (plus the two Casts described in the module docstring).

    Needs onnx and onnxscript (the dynamo exporter's own dependencies).
    """
    try:
        import onnx
        from onnxscript import opset18 as op
        from onnxscript._internal import values as onnxscript_values
    except ImportError as exc:
        raise MissingDependencyError(
            f"the custom-node ONNX export needs onnx and onnxscript ({exc!r}); install them: "
            'pip install "s3rt[export]" onnxscript') from exc

    custom_op = onnxscript_values.Op(onnxscript_values.Opset(ONNX_DOMAIN, ONNX_OP_VERSION), ONNX_OP_TYPE,
                                     op_schema=_onnx_schema())

    def masked_query_gather_to_onnx(pixel, query_key, foreground, num_heads: int):
        foreground_i32 = op.Cast(foreground, to=onnx.TensorProto.INT32)
        gathered, index_i32 = custom_op(pixel, query_key, foreground_i32, num_heads=num_heads,
                                        plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)
        return gathered, op.Cast(index_i32, to=onnx.TensorProto.INT64)

    return {torch.ops.s3rt.masked_query_gather.default: masked_query_gather_to_onnx}


def register_onnx_symbolic(opset_version: int = 17) -> None:
    """Custom-node export for the legacy TorchScript exporter (``torch.onnx.export(dynamo=False)``).

    Pass ``custom_opsets={"s3rt": 1}`` to that export. Registration is global to the process.
    """
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    def symbolic(g, pixel, query_key, foreground, num_heads):
        heads = symbolic_helper._get_const(num_heads, "i", "num_heads")
        foreground_i32 = g.op("Cast", foreground, to_i=6)                  # INT32
        gathered, index_i32 = g.op(f"{ONNX_DOMAIN}::{ONNX_OP_TYPE}", pixel, query_key, foreground_i32,
                                   num_heads_i=heads, plugin_namespace_s=PLUGIN_NAMESPACE,
                                   plugin_version_s=PLUGIN_VERSION, outputs=2)
        return gathered, g.op("Cast", index_i32, to_i=7)                   # INT64

    register_custom_op_symbolic(OP_NAME, symbolic, opset_version)


def decompose_to_reference(exported_program: "torch.export.ExportedProgram") -> "torch.export.ExportedProgram":
    """Replace the op by the torch reference's aten ops (standard-op ONNX from a model that calls it)."""
    return exported_program.run_decompositions(
        {torch.ops.s3rt.masked_query_gather.default: reference.masked_query_gather_torch})
