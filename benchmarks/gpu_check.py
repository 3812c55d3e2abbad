"""One prepared GPU check (issue 15): kernel parity + bench, torch CUDA tracker parity and FPS, one table.

    python3 -m s3rt.benchmarks.gpu_check [--configs tiny,s3-r50,s3-base] [--frames 12] [--out gpu_check.md]

Steps, all in one process on the first CUDA device:
1. build the fused kernel (torch extension, nvcc) and run the kernel benchmark (fused vs unfused,
   argmax agreement = parity vs the reference), via s3rt.benchmarks.kernel_bench;
2. per config at 480p (480x854, seeded random weights, synthetic 2-object clip): the tracker on
   torch CPU fp32 (the reference), torch CUDA fp32 and torch CUDA fp16; per CUDA run the max
   |dp| and the argmax agreement vs CPU fp32, and FPS over the frames after the first.
3. the torch-free device memory shared by the TensorRT backend and ONNX Runtime's GPU providers
   (runtime/backends/cuda/memory.py, cuda-bindings): every array operation the tracker uses, on
   strided views as the tracker takes them, against the same operations in numpy (`memory_ops_check`).
Without a CUDA device it prints "no CUDA device" and exits 2 before doing anything.
No timed asserts: figures are printed, and written to --out.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

CONFIGS = ("tiny", "s3-r50", "s3-base")


def tracker_run(config: str, device: str, precision: str, frames: list[np.ndarray], mask: np.ndarray) -> tuple[list, float]:
    """(probabilities per frame, FPS over frames[1:]) for one backend."""
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    backend = TorchBackend(config, device=device, seed=0, precision=precision)
    tracker = Tracker(backend, max_short_side=None)
    probs, start = [], None
    for i, f in enumerate(frames):
        if i == 1:
            if device.startswith("cuda"):
                import torch
                torch.cuda.synchronize()
            start = time.perf_counter()
        probs.append(tracker.step(f, mask=mask if i == 0 else None, end=i == len(frames) - 1).probabilities)
    fps = (len(frames) - 1) / (time.perf_counter() - start) if start is not None else float("nan")
    return probs, fps


def memory_ops_check(ops, seed: int = 0) -> list[str]:
    """Run the tracker's buffer operations through `ops` (empty/upload/copy_/add_/fill_/to_host) and
    through numpy side by side; return the mismatches (empty list = all equal, bit for bit)."""
    rng = np.random.default_rng(seed)
    bad: list[str] = []
    ref = {"bank": np.zeros((2, 8, 6 * 5), np.float32), "value": np.zeros((3, 4, 6 * 5), np.float32),
           "om": np.zeros((1, 3, 4, 7), np.float32)}
    dev = {k: ops.empty(v.shape, str(v.dtype)) for k, v in ref.items()}

    def compare(what: str) -> None:
        for k in ref:
            got = ops.to_host(dev[k])
            if not np.array_equal(got, ref[k]):
                bad.append(f"{what}: {k} differs (max |d| {float(np.abs(got - ref[k]).max()):.3g})")

    compare("empty (zero-filled)")
    full = rng.normal(size=ref["bank"].shape).astype(np.float32)
    ops.upload(dev["bank"], full)
    ref["bank"][...] = full
    compare("upload")
    for slot in (0, 3, 5):                                   # one memory slot: mem_key[:, :, span] (strided)
        span = slice(slot * 5, (slot + 1) * 5)
        new = rng.normal(size=(2, 8, 5)).astype(np.float32)
        scratch = ops.empty(new.shape, "float32")
        ops.upload(scratch, new)
        ops.copy_(dev["bank"][:, :, span], scratch)
        ref["bank"][:, :, span] = new
    compare("strided slot writes (copy_)")
    ops.copy_(dev["value"][1], dev["value"][2])             # row move
    ops.upload(dev["value"][:2], rng.normal(size=(2, 4, 30)).astype(np.float32))
    ref["value"][1] = ref["value"][2]
    ref["value"][:2] = ops.to_host(dev["value"][:2])
    ops.fill_(dev["value"][0, :, 10:20], 0)                  # clear a strided block
    ref["value"][0, :, 10:20] = 0
    compare("row copy, partial upload, strided fill_")
    inc = rng.normal(size=(1, 2, 4, 7)).astype(np.float32)
    ops.add_(dev["om"][:, :2], inc)                          # object-memory running sums
    ops.add_(dev["om"][:, :2], inc)
    ref["om"][:, :2] += inc
    ref["om"][:, :2] += inc
    compare("add_")
    return bad


def _memory_line() -> str:
    try:
        from cuda.bindings import runtime as cudart
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return f"device memory (cuda_memory.py): not run, cuda-bindings not importable ({exc!r})"
    from s3rt.runtime.backends.cuda.memory import CudaMemory
    mem = CudaMemory(cudart, 0)
    try:
        bad = memory_ops_check(mem)
    finally:
        mem.close()
    return ("device memory (cuda_memory.py, cuda-bindings): every tracker buffer operation equals numpy bit for bit"
            if not bad else "device memory (cuda_memory.py): MISMATCH " + "; ".join(bad))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated model configs (default all three)")
    p.add_argument("--frames", type=int, default=12, help="frames per run, the first is the mask frame (default 12)")
    p.add_argument("--height", type=int, default=480, help="frame height (default 480)")
    p.add_argument("--width", type=int, default=854, help="frame width (default 854)")
    p.add_argument("--skip-kernel", action="store_true", help="skip the kernel build and benchmark")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing measured", file=sys.stderr)
        return 2
    from s3rt.runtime.compare import frame_agreement
    from s3rt.runtime.io.synthetic import first_frame_clip
    lines = [f"GPU check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})", ""]
    if not args.skip_kernel:
        from s3rt.benchmarks import kernel_bench
        rows = kernel_bench.run(queries=16, heads=8, iters=50, repeats=3, warmup=5, seed=0)
        lines += [kernel_bench.format_table(rows, queries=16, heads=8), ""]
    lines += [_memory_line(), ""]
    print(lines[-2], flush=True)
    lines += ["| config | size | run | max abs dp vs CPU fp32 | argmax agreement (min) | FPS |",
              "|---|---|---|---:|---:|---:|"]
    frames, mask = first_frame_clip(args.frames, args.height, args.width, num_objects=2)
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        ref, cpu_fps = tracker_run(config, "cpu", "fp32", frames, mask)
        lines.append(f"| {config} | {args.height}x{args.width} | torch cpu fp32 (reference) | 0 | 1 | {cpu_fps:.2f} |")
        for precision in ("fp32", "fp16"):
            probs, fps = tracker_run(config, "cuda", precision, frames, mask)
            diffs, agree = frame_agreement(ref, probs)
            lines.append(f"| {config} | {args.height}x{args.width} | torch cuda {precision} | {max(diffs):.3g} | "
                         f"{min(agree):.4f} | {fps:.1f} |")
        print("\n".join(lines[-3:]), flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
