"""CudaMemory (runtime/backends/cuda/memory.py) on a simulated CUDA stream: array operations vs numpy,
and the enqueue/synchronize bookkeeping under threads (issue 24, defect 5).

`StreamSim` is a cuda.bindings.runtime stand-in whose "device" allocations are host buffers and
whose stream is a queue: an async copy or memset runs only when the stream is synchronised (the
latest a real GPU may run it), a host-to-device copy reads its source when enqueued (pageable
memory is staged before cudaMemcpyAsync returns). So a missing synchronize shows up as stale
data, and the order of enqueues and synchronises is recorded. The real CUDA path runs in
benchmarks/gpu_check.py on a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import threading

import numpy as np
import pytest

from s3rt.benchmarks.gpu_check import memory_ops_check
from s3rt.errors import BackendError
from s3rt.runtime.backends.cuda.memory import CudaMemory


class StreamSim:
    """The cuda.bindings.runtime calls CudaMemory makes, on host memory with a deferred stream."""

    class cudaError_t(enum.IntEnum):
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2
        cudaMemcpyDeviceToDevice = 3

    cudaStreamNonBlocking = 1

    def __init__(self, on_sync=None) -> None:
        self._buffers: dict[int, ctypes.Array] = {}
        self._queue: list = []
        self._queue_lock = threading.Lock()
        self.log: list[str] = []
        self.on_sync = on_sync          # called inside cudaStreamSynchronize, after the queue ran

    ok = (cudaError_t.cudaSuccess,)

    def _push(self, what: str, fn) -> tuple:
        with self._queue_lock:
            self._queue.append(fn)
            self.log.append(what)
        return self.ok

    def cudaSetDevice(self, device):
        return self.ok

    def cudaStreamCreateWithFlags(self, flags):
        return (self.cudaError_t.cudaSuccess, "stream")

    def cudaMalloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self._buffers[ctypes.addressof(buf)] = buf
        return (self.cudaError_t.cudaSuccess, ctypes.addressof(buf))

    def cudaFree(self, ptr):
        self._buffers.pop(ptr)
        return self.ok

    def cudaStreamDestroy(self, stream):
        self.log.append("stream destroyed")
        return self.ok

    def cudaGetErrorString(self, err):
        return (self.cudaError_t.cudaSuccess, b"simulated error")

    def cudaMemsetAsync(self, ptr, value, nbytes, stream):
        return self._push("memset", lambda: ctypes.memset(ptr, value, nbytes))

    def cudaMemset2DAsync(self, ptr, pitch, value, width, height, stream):
        def run():
            for r in range(height):
                ctypes.memset(ptr + r * pitch, value, width)
        return self._push("memset2d", run)

    def _copy(self, dst, dpitch, src, spitch, width, height, kind):
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:       # staged now
            rows = [ctypes.string_at(src + r * spitch, width) for r in range(height)]

            def run():
                for r, data in enumerate(rows):
                    ctypes.memmove(dst + r * dpitch, data, width)
        else:
            def run():
                for r in range(height):
                    ctypes.memmove(dst + r * dpitch, src + r * spitch, width)
        return run

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        return self._push("memcpy", self._copy(dst, nbytes, src, nbytes, nbytes, 1, kind))

    def cudaMemcpy2DAsync(self, dst, dpitch, src, spitch, width, height, kind, stream):
        return self._push("memcpy2d", self._copy(dst, dpitch, src, spitch, width, height, kind))

    def cudaStreamSynchronize(self, stream):
        with self._queue_lock:
            queued, self._queue = self._queue, []
            self.log.append(f"sync({len(queued)})")
        for fn in queued:
            fn()
        if self.on_sync is not None:
            self.on_sync()
        return self.ok


def device_view(mem_array) -> np.ndarray:
    """What a consumer reading the device memory directly (an ONNX Runtime run) sees."""
    raw = ctypes.string_at(mem_array.ptr, mem_array.nbytes)
    return np.frombuffer(raw, mem_array.dtype).reshape(mem_array.shape)


def test_every_tracker_buffer_operation_matches_numpy_on_a_deferred_stream():
    sim = StreamSim()
    mem = CudaMemory(sim, 0)
    try:
        assert memory_ops_check(mem) == []
        assert any(k.startswith("memcpy2d") for k in sim.log) and "memset2d" in sim.log   # strided paths ran
    finally:
        mem.close()


def test_copies_are_visible_only_after_sync_pending():
    mem = CudaMemory(StreamSim(), 0)
    src, dst = mem.empty((4, 8), "float32"), mem.empty((4, 8), "float32")
    values = np.arange(32, dtype=np.float32).reshape(4, 8)
    mem.upload(src, values)
    mem.copy_(dst, src)
    assert mem.pending and not device_view(dst).any()          # enqueued, not run yet
    mem.sync_pending()
    assert not mem.pending
    np.testing.assert_array_equal(device_view(dst), values)


def test_one_threads_synchronize_does_not_retire_another_threads_copy():
    """Thread B synchronises; while its cudaStreamSynchronize is returning, thread A enqueues a copy.
    A's copy must still count as pending afterwards (a single flag cleared by B lost it)."""
    b_synced, a_enqueued = threading.Event(), threading.Event()

    def on_sync():
        if threading.current_thread().name == "B":
            b_synced.set()
            assert a_enqueued.wait(10)

    sim = StreamSim(on_sync)
    mem = CudaMemory(sim, 0)
    src, dst = mem.empty((2, 16), "float32"), mem.empty((2, 16), "float32")
    mem.upload(src, np.full((2, 16), 7.0, np.float32))
    sim.log.clear()
    b = threading.Thread(target=mem.synchronize, name="B")
    b.start()
    assert b_synced.wait(10)
    mem.copy_(dst, src)                                          # thread A (this one)
    a_enqueued.set()
    b.join(10)
    assert sim.log == ["sync(0)", "memcpy"]
    assert mem.pending, "B's synchronize retired a copy enqueued after it started"
    mem.sync_pending()                                           # what OnnxRuntimeBackend.run does
    np.testing.assert_array_equal(device_view(dst), np.full((2, 16), 7.0, np.float32))
    assert sim.log == ["sync(0)", "memcpy", "sync(1)"]


def test_threads_always_read_their_own_copy():
    """Eight threads copy into their own rows and read them as a run would, while the others sync."""
    sim = StreamSim()
    mem = CudaMemory(sim, 0)
    rows = 8
    src, dst = mem.empty((rows, 64), "float32"), mem.empty((rows, 64), "float32")
    stale: list[tuple[int, int]] = []

    def worker(row: int) -> None:
        for it in range(200):
            mem.upload(src[row], np.full(64, row * 1000 + it, np.float32))
            mem.copy_(dst[row], src[row])
            mem.sync_pending()
            if device_view(dst[row])[0] != row * 1000 + it:
                stale.append((row, it))

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(rows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not stale


def test_cuda_errors_raise_with_the_call_named():
    class Failing(StreamSim):
        def cudaMemcpyAsync(self, *args):
            return (self.cudaError_t.cudaErrorMemoryAllocation,)

    mem = CudaMemory(Failing(), 0)
    a, b = mem.empty((3,), "float32"), mem.empty((3,), "float32")
    with pytest.raises(BackendError, match=r"cudaMemcpyAsync failed: cudaErrorMemoryAllocation: simulated error"):
        mem.copy_(a, b)
