"""Reference math of the masked discriminative-query gather (DQ_CA core, spec 9.3-9.4.1).

This file is the one definition of ``s3rt::masked_query_gather``: the model's DQ_CA
(``s3rt.export.model.object_transformer`` imports :func:`masked_query_gather_torch` as its
``masked_query_gather``), the fused CUDA kernel (``masked_query_gather.cu``), its torch binding
(``torch_op.py``, whose CPU path and ONNX decomposition call it) and the TensorRT plugin
(``plugin/``) are all tested against it. It lives here, not in the model, because it is the
op's specification: kernels depend on nothing of ``s3rt.export``, the model depends on its op.
Two versions of the same math:

* :func:`masked_query_gather_numpy` -- plain numpy, float64-safe, written for reading;
* :func:`masked_query_gather_torch` -- plain torch ops only (no in-place boolean indexing), so it
  exports to ONNX as ReduceL2/MatMul/Where/ArgMax/GatherElements. The model runs this one (on
  CUDA, `S3Model` can swap in the fused kernel through ``torch_op``).

Symbols (spec section 9): BN = B*N object rows, P = h*w pixels, Q queries, C = 256 channels,
H = num_heads, D = C/H channels per head. Inputs:

* ``pixel``      (BN, P, C) float: pixel tokens + positional embedding, *not* normalised;
* ``query_key``  (BN, Q, C) float: K^ = normalize(LN(Xq) + Eq), already L2-normalised over C;
* ``foreground`` (BN, P) bool: True where the pixel is foreground for this object row.

Math:

* ``X^ = pixel / max(||pixel||_2 over C, 1e-12)`` (``F.normalize``; no per-head renormalisation);
* ``s[bn, hd, p, q] = <X^[bn, p, hd*D:(hd+1)*D], K^[bn, q, hd*D:(hd+1)*D]>``;
* ``blocked[bn, q, p] = not fg[bn, p]`` for ``q < Q // 2``, ``fg[bn, p]`` for ``q >= Q // 2``;
  a row ``(bn, q)`` blocked at every pixel is fully unblocked (an object with no foreground,
  or with foreground everywhere, reads from all pixels); blocked scores are -inf;
* ``index[bn, hd, q] = argmax_p s[bn, hd, :, q]``, the first index on ties (like torch.argmax);
* ``gathered[bn, q, hd*D:(hd+1)*D] = X^[bn, index[bn, hd, q], hd*D:(hd+1)*D]``.

Outputs: ``gathered`` (BN, Q, C) in the input dtype, ``index`` (BN, H, Q) int64.

Precision: both references compute in float32 at least (float64 stays float64 in the numpy
version); half inputs are upcast and ``gathered`` is cast back at the end -- the same contract as
the CUDA kernel (fp32 accumulation). The argmax is discontinuous: a top-1/top-2 score gap below
~1e-5 can select another pixel under rounding-level differences (spec 15), so comparisons
between implementations accept index disagreements only where :func:`top2_gap_numpy` is small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from s3rt.errors import ShapeError

if TYPE_CHECKING:  # torch is optional for this module: only the torch reference needs it
    import torch

NORM_EPS = 1e-12  # F.normalize's default eps, spec 9.4.1


def _check_sizes(pixel_shape, query_key_shape, foreground_shape, num_heads: int) -> tuple[int, int, int, int]:
    """Validate shapes; return (BN, P, Q, C). Raises ShapeError naming expected and got."""
    if len(pixel_shape) != 3:
        raise ShapeError(f"masked_query_gather.pixel: expected (BN, P, C), got {tuple(pixel_shape)}")
    bn, p, c = (int(v) for v in pixel_shape)
    if len(query_key_shape) != 3 or int(query_key_shape[0]) != bn or int(query_key_shape[2]) != c:
        raise ShapeError(f"masked_query_gather.query_key: expected ({bn}, Q, {c}), got {tuple(query_key_shape)}")
    if tuple(int(v) for v in foreground_shape) != (bn, p):
        raise ShapeError(f"masked_query_gather.foreground: expected ({bn}, {p}), got {tuple(foreground_shape)}")
    if int(num_heads) < 1 or c % int(num_heads) != 0:
        raise ShapeError(f"masked_query_gather.num_heads: expected a divisor of C={c}, got {num_heads}")
    if p < 1:
        raise ShapeError("masked_query_gather.pixel: expected at least one pixel (P >= 1), got P = 0")
    q = int(query_key_shape[1])
    return bn, p, q, c


# ----------------------------------------------------------------------------------------------
# numpy
# ----------------------------------------------------------------------------------------------

def blocked_mask_numpy(foreground: np.ndarray, num_queries: int) -> np.ndarray:
    """Attention mask of spec 9.3 for one head: (BN, P) bool -> blocked (BN, P, Q) bool."""
    fg = np.asarray(foreground).astype(bool)                    # (BN, P)
    is_first_half = np.arange(num_queries) < num_queries // 2   # (Q,)
    # first half: block background; second half: block foreground
    blocked = np.where(is_first_half[None, None, :], ~fg[:, :, None], fg[:, :, None])  # (BN, P, Q)
    fully_blocked = blocked.all(axis=1, keepdims=True)          # (BN, 1, Q)
    return blocked & ~fully_blocked


def _compute_dtype_numpy(dtype) -> np.dtype:
    return np.promote_types(np.dtype(dtype), np.float32)


def normalize_numpy(pixel: np.ndarray) -> np.ndarray:
    """X^ = pixel / max(||pixel||_2, 1e-12) over the last axis, in float32 or wider."""
    x = np.asarray(pixel).astype(_compute_dtype_numpy(np.asarray(pixel).dtype))
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norm, NORM_EPS)


def masked_query_scores_numpy(pixel: np.ndarray, query_key: np.ndarray, foreground: np.ndarray,
                              num_heads: int) -> np.ndarray:
    """Masked scores s (BN, H, P, Q), -inf where blocked (the tensor the argmax runs over)."""
    bn, p, q, c = _check_sizes(np.shape(pixel), np.shape(query_key), np.shape(foreground), num_heads)
    d = c // num_heads
    x_hat = normalize_numpy(pixel)                                          # (BN, P, C)
    k_hat = np.asarray(query_key).astype(x_hat.dtype)                       # (BN, Q, C)
    xh = x_hat.reshape(bn, p, num_heads, d).transpose(0, 2, 1, 3)           # (BN, P, C) -> (BN, H, P, D)
    kh = k_hat.reshape(bn, q, num_heads, d).transpose(0, 2, 3, 1)           # (BN, Q, C) -> (BN, H, D, Q)
    scores = xh @ kh                                                    # (BN, H, P, D) @ (BN, H, D, Q) -> (BN, H, P, Q)
    blocked = blocked_mask_numpy(foreground, q)                             # (BN, P, Q)
    return np.where(blocked[:, None, :, :], -np.inf, scores)               # (BN, H, P, Q)


def masked_query_gather_numpy(pixel: np.ndarray, query_key: np.ndarray, foreground: np.ndarray,
                              num_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference in numpy: returns gathered (BN, Q, C) in the input dtype, index (BN, H, Q) int64."""
    pixel = np.asarray(pixel)
    bn, p, q, c = _check_sizes(pixel.shape, np.shape(query_key), np.shape(foreground), num_heads)
    d = c // num_heads
    scores = masked_query_scores_numpy(pixel, query_key, foreground, num_heads)  # (BN, H, P, Q)
    index = np.argmax(scores, axis=2).astype(np.int64)                      # (BN, H, Q), first max on ties
    xh = normalize_numpy(pixel).reshape(bn, p, num_heads, d).transpose(0, 2, 1, 3)  # (BN, H, P, D)
    gathered = np.take_along_axis(xh, index[..., None], axis=2)             # (BN, H, Q, 1) -> (BN, H, Q, D)
    gathered = gathered.transpose(0, 2, 1, 3).reshape(bn, q, c)             # (BN, H, Q, D) -> (BN, Q, C)
    return gathered.astype(pixel.dtype), index


def top2_gap_numpy(scores: np.ndarray) -> np.ndarray:
    """Gap between the best and second-best finite score along P: (BN, H, P, Q) -> (BN, H, Q).

    +inf where a row has fewer than two finite scores (its argmax cannot flip). Used to decide
    which index disagreements between two implementations are rounding-level (spec 15).
    """
    s = np.where(np.isfinite(scores), scores, -np.inf)
    if s.shape[2] < 2:
        return np.full(s.shape[:2] + s.shape[3:], np.inf)
    top2 = -np.sort(-s, axis=2)[:, :, :2, :]                                # (BN, H, 2, Q)
    gap = top2[:, :, 0, :] - top2[:, :, 1, :]
    return np.where(np.isfinite(top2[:, :, 1, :]), gap, np.inf)


# ----------------------------------------------------------------------------------------------
# torch (exportable: Where / ArgMax / GatherElements, no in-place boolean indexing)
# ----------------------------------------------------------------------------------------------

def blocked_mask_torch(foreground: "torch.Tensor", num_queries: int) -> "torch.Tensor":
    """Attention mask of spec 9.3 for one head: (BN, P) bool -> blocked (BN, P, Q) bool.

    Written as ``blocked & ~all(blocked, pixels)`` (spec 14), with no data-dependent indexing.
    """
    import torch

    fg = foreground.to(torch.bool)                                          # (BN, P)
    is_second_half = torch.arange(num_queries, device=fg.device) >= num_queries // 2  # (Q,)
    # q < Q/2 blocks background (not fg), q >= Q/2 blocks foreground: blocked = fg XOR first-half
    blocked = torch.logical_xor(fg[:, :, None], ~is_second_half[None, None, :])  # (BN, P, 1) ^ (1, 1, Q) -> (BN, P, Q)
    fully_blocked = blocked.all(dim=1, keepdim=True)                        # (BN, 1, Q)
    return blocked & ~fully_blocked


def _is_tracing() -> bool:
    """True under torch.export / dynamo / the TorchScript tracer (sizes may be symbolic there)."""
    import torch

    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


def masked_query_gather_torch(pixel: "torch.Tensor", query_key: "torch.Tensor", foreground: "torch.Tensor",
                              num_heads: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Reference in torch: gathered (BN, Q, C) in pixel's dtype, index (BN, H, Q) int64.

    Computes in float32 (float64 stays float64); half inputs are upcast, like the CUDA kernel.
    Shape arithmetic avoids the sizes BN and P, so both can stay dynamic axes in an export.
    """
    import torch
    import torch.nn.functional as F

    if not _is_tracing():
        _check_sizes(pixel.shape, query_key.shape, foreground.shape, num_heads)
    c = pixel.shape[-1]
    d = c // num_heads
    q = query_key.shape[1]
    compute = torch.float64 if pixel.dtype == torch.float64 else torch.float32
    x_hat = F.normalize(pixel.to(compute), p=2.0, dim=-1, eps=NORM_EPS)     # (BN, P, C)
    k_hat = query_key.to(compute)                                           # (BN, Q, C)
    xh = x_hat.unflatten(-1, (num_heads, d)).transpose(1, 2)              # (BN, P, C) -> (BN, P, H, D) -> (BN, H, P, D)
    kh = k_hat.unflatten(-1, (num_heads, d)).permute(0, 2, 3, 1)          # (BN, Q, C) -> (BN, Q, H, D) -> (BN, H, D, Q)
    scores = torch.matmul(xh, kh)                                       # (BN, H, P, D) @ (BN, H, D, Q) -> (BN, H, P, Q)
    blocked = blocked_mask_torch(foreground, q)                             # (BN, P, Q)
    neg_inf = torch.full((), float("-inf"), dtype=compute, device=scores.device)
    scores = torch.where(blocked[:, None, :, :], neg_inf, scores)       # (BN, 1, P, Q) | (BN, H, P, Q) -> (BN, H, P, Q)
    index = torch.argmax(scores, dim=2)                                     # (BN, H, Q) int64, first max on ties
    gather_index = index[:, :, :, None].expand(-1, -1, -1, d)               # (BN, H, Q) -> (BN, H, Q, D)
    gathered = torch.gather(xh, 2, gather_index)                            # (BN, H, P, D) -> (BN, H, Q, D)
    gathered = gathered.transpose(1, 2).flatten(2)                        # (BN, H, Q, D) -> (BN, Q, H, D) -> (BN, Q, C)
    return gathered.to(pixel.dtype), index
