"""Device memory without torch: typed strided views of CUDA allocations and the copies between them.

Shared by the TensorRT backend and ONNX Runtime's GPU providers, so that the tracker's state (the
memory bank above all) lives on the GPU for both and is bound in place, never copied per call.

`DeviceArray` is pointer arithmetic only (no CUDA call): indexing with ints and step-1 slices
returns views, so the tracker's N/NB slices bind in place; `reshape` works on contiguous arrays.
Copies between strided views (the tracker writes one memory slot into `mem_key[:, :, slot]`)
become cudaMemcpy2DAsync calls planned by the pure function `plan_copy` (tested without a GPU).
`CudaMemory` owns the allocations and one CUDA stream and implements the backend array
operations (empty, upload, to_host, copy_, add_, fill_) with cuda-bindings.

`add_` has no elementwise kernel without torch: it copies both operands to the host, adds with
numpy and uploads the sum (a synchronising round trip). The tracker calls it once per memory
frame, on `object_memory` rows of N*Q*(C+1) floats (8 * 16 * 257 * 4 bytes = 128 KiB at most).
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any, NamedTuple

import numpy as np

from s3rt.errors import BackendError, InternalError, ShapeError


# -- strided copy planning (pure Python, no CUDA) ------------------------------------------------
class Copy2D(NamedTuple):
    """One cudaMemcpy2DAsync: `height` rows of `width` bytes; offsets and pitches in bytes."""

    dst_offset: int
    dst_pitch: int
    src_offset: int
    src_pitch: int
    width: int
    height: int


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """C-order strides in elements."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def is_contiguous(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """C-contiguous, ignoring the strides of size-1 axes (as numpy does)."""
    expected = 1
    for d, s in zip(reversed(shape), reversed(strides)):
        if d == 1:
            continue
        if s != expected:
            return False
        expected *= d
    return True


def plan_copy(shape: tuple[int, ...], dst_strides: tuple[int, ...], src_strides: tuple[int, ...],
              itemsize: int) -> list[Copy2D]:
    """Copies that move a `shape` block between two strided layouts (strides in elements).

    Trailing axes contiguous in both layouts form one row; the remaining axes are merged where
    both layouts allow it, the innermost of them becomes the 2-D copy's height and any others
    are enumerated. A fully contiguous pair gives a single row (height 1).
    """
    if len(shape) != len(dst_strides) or len(shape) != len(src_strides):
        raise InternalError(f"plan_copy: rank mismatch {shape} {dst_strides} {src_strides}")
    if any(d == 0 for d in shape):
        return []
    dims = [(d, ds, ss) for d, ds, ss in zip(shape, dst_strides, src_strides) if d != 1]
    width, k = 1, len(dims)
    while k > 0 and dims[k - 1][1] == width and dims[k - 1][2] == width:
        width *= dims[k - 1][0]
        k -= 1
    outer: list[tuple[int, int, int]] = []
    for d, ds, ss in dims[:k]:
        if outer and outer[-1][1] == ds * d and outer[-1][2] == ss * d:
            pd, _, _ = outer[-1]
            outer[-1] = (pd * d, ds, ss)      # merge with the previous (outer) axis
        else:
            outer.append((d, ds, ss))
    if not outer:
        return [Copy2D(0, width * itemsize, 0, width * itemsize, width * itemsize, 1)]
    height, dpitch, spitch = outer[-1]
    plans = []
    for idx in itertools.product(*(range(d) for d, _, _ in outer[:-1])):
        doff = sum(i * ds for i, (_, ds, _) in zip(idx, outer))
        soff = sum(i * ss for i, (_, _, ss) in zip(idx, outer))
        plans.append(Copy2D(doff * itemsize, dpitch * itemsize, soff * itemsize, spitch * itemsize,
                            width * itemsize, height))
    return plans


def _normalize_index(key: Any, shape: tuple[int, ...]) -> list[Any]:
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices: {len(key)} for an array of rank {len(shape)}")
    return list(key) + [slice(None)] * (len(shape) - len(key))


class DeviceArray:
    """A typed, possibly strided view of device memory (pointer arithmetic only, no CUDA calls).

    `ptr` is the address of element [0, ..., 0]; strides are in elements. `owner` keeps the
    allocation alive for views.
    """

    __slots__ = ("ptr", "shape", "dtype", "strides", "owner")

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: Any, strides: tuple[int, ...] | None = None,
                 owner: object = None) -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.strides = tuple(strides) if strides is not None else contiguous_strides(self.shape)
        if len(self.strides) != len(self.shape):
            raise InternalError(f"DeviceArray: {len(self.strides)} strides for shape {self.shape}")
        self.owner = owner

    # numpy-like metadata
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def is_contiguous(self) -> bool:
        return is_contiguous(self.shape, self.strides)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d DeviceArray")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(ptr=0x{self.ptr:x}, shape={self.shape}, dtype={self.dtype}, strides={self.strides})"

    def __getitem__(self, key: Any) -> "DeviceArray":
        offset, shape, strides = 0, [], []
        for k, d, s in zip(_normalize_index(key, self.shape), self.shape, self.strides):
            if isinstance(k, slice):
                start, stop, step = k.indices(d)
                if step != 1:
                    raise IndexError("DeviceArray supports step-1 slices only")
                n = max(0, stop - start)
                offset += start * s if n else 0
                shape.append(n)
                strides.append(s)
            elif isinstance(k, (int, np.integer)):
                i = int(k)
                if not -d <= i < d:
                    raise IndexError(f"index {i} is out of bounds for an axis of size {d}")
                offset += (i % d) * s
            else:
                raise IndexError(f"DeviceArray supports ints, step-1 slices and '...', got {k!r}")
        return DeviceArray(self.ptr + offset * self.itemsize, tuple(shape), self.dtype, tuple(strides),
                           self.owner if self.owner is not None else self)

    def reshape(self, *shape: Any) -> "DeviceArray":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if shape.count(-1) > 1:
            raise ValueError("can only specify one unknown dimension")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if known == 0 or self.size % known:
                raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
            shape = tuple(self.size // known if d == -1 else d for d in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape array of size {self.size} into shape {shape}")
        if not self.is_contiguous:
            raise ValueError(f"reshape of a non-contiguous DeviceArray view {self.shape} (strides {self.strides})")
        return DeviceArray(self.ptr, shape, self.dtype, None, self.owner if self.owner is not None else self)


# -- allocations, stream and array operations -----------------------------------------------------
class CudaMemory:
    """Allocations and one non-blocking stream on one device; freed together by `close()`.

    Copies are enqueued on the stream; `pending` says whether any may still run, so a consumer on
    another stream (ONNX Runtime's CUDA EP, which does not wait for other streams before a run)
    can `sync_pending()` first. Host transfers synchronise before returning.

    Thread safety: one CudaMemory serves every session of a concurrent backend (the serving
    manager runs ONNX Runtime sessions in parallel threads). A single "pending" flag would let one
    thread's synchronize clear the flag for a copy another thread enqueued after that synchronize
    started, and the second thread's run would read stale input. So every enqueue is numbered
    (under a lock, after the CUDA call returns) and a synchronize only retires the copies that were
    numbered before it called cudaStreamSynchronize.
    """

    def __init__(self, cudart: Any, device: int = 0) -> None:
        self.cudart = cudart
        self.device = int(device)
        self._allocations: list[int] = []
        self._lock = threading.Lock()
        self._enqueued = 0            # copies/memsets enqueued on the stream so far
        self._retired = 0             # of those, how many a finished synchronize covered
        err = cudart.cudaSetDevice(self.device)[0]
        if err != cudart.cudaError_t.cudaSuccess:          # the first CUDA call: say which pairing failed
            from s3rt.runtime.backends.cuda.env import explain
            raise BackendError(f"cudaSetDevice({self.device}) failed: {cuda_error_text(cudart, err)} "
                               f"({explain(cudart, err)})")
        self.stream = self.check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                 "cudaStreamCreateWithFlags")

    def check(self, result: tuple, what: str) -> Any:
        return cuda_check(self.cudart, result, what)

    @property
    def pending(self) -> bool:
        """True while a copy enqueued on the stream may not have completed."""
        with self._lock:
            return self._retired < self._enqueued

    def _enqueue(self, calls: list[tuple[Any, tuple, str]]) -> None:
        """Run the (function, args, what) CUDA calls that enqueue work, then count them as one copy."""
        with self._lock:
            for fn, args, what in calls:
                self.check(fn(*args), what)
            self._enqueued += 1

    # -- lifecycle --------------------------------------------------------------------------------
    def malloc(self, nbytes: int) -> int:
        ptr = int(self.check(self.cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)"))
        with self._lock:
            self._allocations.append(ptr)
        return ptr

    def synchronize(self) -> None:
        """Wait for everything enqueued before this call (other threads may enqueue meanwhile)."""
        with self._lock:
            covered = self._enqueued
        self.check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        with self._lock:
            self._retired = max(self._retired, covered)

    def sync_pending(self) -> None:
        """synchronize() if any enqueued copy may still run (before a run on another stream)."""
        if self.pending:
            self.synchronize()

    def close(self) -> None:
        cudart = self.cudart
        if self.stream is not None:
            cudart.cudaStreamSynchronize(self.stream)
        for ptr in self._allocations:
            cudart.cudaFree(ptr)
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
        self._allocations = []
        self.stream = None

    # -- array operations (Backend's empty/to_host/upload/copy_/add_/fill_) -----------------------
    def empty(self, shape: tuple[int, ...], dtype: str) -> DeviceArray:
        dt = np.dtype(dtype)
        nbytes = max(1, math.prod(shape) * dt.itemsize)
        ptr = self.malloc(nbytes)
        self._enqueue([(self.cudart.cudaMemsetAsync, (ptr, 0, nbytes, self.stream), "cudaMemsetAsync")])
        return DeviceArray(ptr, tuple(shape), dt)

    def memcpy(self, dst: int, dst_strides: tuple[int, ...], src: int, src_strides: tuple[int, ...],
               shape: tuple[int, ...], itemsize: int, kind: Any) -> None:
        cudart, calls = self.cudart, []
        for c in plan_copy(shape, dst_strides, src_strides, itemsize):
            if c.height == 1 or (c.dst_pitch == c.width and c.src_pitch == c.width):
                calls.append((cudart.cudaMemcpyAsync, (dst + c.dst_offset, src + c.src_offset, c.width * c.height,
                                                       kind, self.stream), "cudaMemcpyAsync"))
            else:
                calls.append((cudart.cudaMemcpy2DAsync, (dst + c.dst_offset, c.dst_pitch, src + c.src_offset,
                                                         c.src_pitch, c.width, c.height, kind, self.stream),
                              "cudaMemcpy2DAsync"))
        self._enqueue(calls)

    def to_host(self, x: Any) -> np.ndarray:
        if not isinstance(x, DeviceArray):
            return np.array(x, copy=True)
        out = np.empty(x.shape, x.dtype)
        self.memcpy(out.ctypes.data, contiguous_strides(x.shape), x.ptr, x.strides, x.shape, x.itemsize,
                    self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        self.synchronize()
        return out

    def upload(self, dst: Any, src: np.ndarray) -> None:
        host = np.ascontiguousarray(np.asarray(src, dtype=getattr(dst, "dtype", None)))
        check_pair("upload", dst, host.shape, host.dtype)
        self.memcpy(dst.ptr, dst.strides, host.ctypes.data, contiguous_strides(host.shape), host.shape,
                    host.itemsize, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        # pageable host memory: the copy has left `host` when cudaMemcpyAsync returns; sync anyway so
        # that a caller reusing `src` right away can never race a pinned-memory implementation
        self.synchronize()

    def copy_(self, dst: Any, src: Any) -> None:
        if not isinstance(src, DeviceArray):
            self.upload(dst, np.asarray(src))
            return
        check_pair("copy_", dst, src.shape, src.dtype)
        self.memcpy(dst.ptr, dst.strides, src.ptr, src.strides, src.shape, src.itemsize,
                    self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice)

    def add_(self, dst: Any, src: Any) -> None:
        """dst += src through the host (no elementwise kernel without torch; see module docstring)."""
        total = self.to_host(dst) + (self.to_host(src) if isinstance(src, DeviceArray) else np.asarray(src))
        self.upload(dst, total.astype(dst.dtype, copy=False))

    def fill_(self, dst: Any, value: float) -> None:
        if not isinstance(dst, DeviceArray):
            raise InternalError(f"fill_: destination is {type(dst).__name__}, not a DeviceArray")
        if value != 0:
            self.upload(dst, np.full(dst.shape, value, dst.dtype))
            return
        cudart, calls = self.cudart, []
        for c in plan_copy(dst.shape, dst.strides, dst.strides, dst.itemsize):
            if c.height == 1 or c.dst_pitch == c.width:
                calls.append((cudart.cudaMemsetAsync, (dst.ptr + c.dst_offset, 0, c.width * c.height, self.stream),
                              "cudaMemsetAsync"))
            else:
                calls.append((cudart.cudaMemset2DAsync, (dst.ptr + c.dst_offset, c.dst_pitch, 0, c.width, c.height,
                                                         self.stream), "cudaMemset2DAsync"))
        self._enqueue(calls)


def cuda_error_text(cudart: Any, err: Any) -> str:
    try:
        _, text = cudart.cudaGetErrorString(err)
        return f"{err.name if hasattr(err, 'name') else err}: {text.decode() if isinstance(text, bytes) else text}"
    except Exception:  # noqa: BLE001 - best effort message
        return str(err)


def cuda_check(cudart: Any, result: tuple, what: str) -> Any:
    """Unpack a cuda-bindings result tuple `(err, *values)`, raising BackendError on a CUDA error."""
    err, *values = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"{what} failed: {cuda_error_text(cudart, err)}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


def check_pair(what: str, dst: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if not isinstance(dst, DeviceArray):
        raise InternalError(f"{what}: destination is {type(dst).__name__}, not a DeviceArray")
    if dst.shape != tuple(shape):
        raise ShapeError(f"{what}: destination {dst.shape}, source {tuple(shape)}")
    if dst.dtype != dtype:
        raise ShapeError(f"{what}: destination dtype {dst.dtype}, source {dtype}")


__all__ = ["Copy2D", "CudaMemory", "DeviceArray", "check_pair", "cuda_check", "cuda_error_text", "contiguous_strides", "is_contiguous", "plan_copy"]
