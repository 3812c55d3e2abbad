"""One prepared GPU check: kernel, device memory and torch CUDA trackers, one table written row by row.

    benchmarks/gpu_check.sh [OUT.md]                      # from a plain checkout, no install, no network
    python3 benchmarks/gpu_check.py [--configs tiny,s3-r50] [--frames 12] [--out gpu_check.md]

Made for a bare GPU machine (PyTorch with CUDA, nvcc, cuda-bindings, ONNX Runtime CPU; no
TensorRT, no network) that has a copy of the working tree: run as a script, it imports `s3rt`
from the checkout it sits in, installed or not (`use_this_checkout`).

Steps, each guarded (a failure becomes a row with its reason and the check goes on), each row
written to stdout and appended to --out as soon as it exists (a timeout keeps what was done):
1. environment (Python, torch, CUDA, GPU, nvcc, ninja, cuda-bindings, ONNX Runtime);
2. imports: every s3rt module the steps use (`MODULES`), so a CPU rehearsal exercises them all;
   then torch: "torch cannot be imported" (exit 3) or "no CUDA device" (exit 2) ends the check;
3. kernel build (torch extension, nvcc);
4. kernel vs the numpy reference: random 480p inputs with fully masked objects, and exact ties
   (first index must win), fp32 and fp16;
5. fused vs unfused speed (s3rt.benchmarks.kernel_bench);
6. device memory (runtime/backends/cuda/memory.py, cuda-bindings): every tracker buffer operation
   on strided views against numpy (`memory_ops_check`);
7. trackers: the trained tiny weights on held-out clips, CPU fp32 vs CUDA fp32/fp16 (J&F against
   the ground truth, mask IoU against CPU); then per config (`default_configs()`: tiny and every
   full-size config in s3rt.configs, Cutie's included once defined) at 480p: CUDA fp32 and fp16
   probabilities vs CPU fp32 on the first --cpu-frames frames (all CPU cores), and FPS.
A step that would start after --budget seconds is recorded as skipped. Exit status: 0 every step
passed, 1 some step failed (see its row), 2 no CUDA device, 3 torch cannot be imported.
No timed asserts: figures are reported, not judged.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
# every s3rt module a step imports: the imports step loads them all before any CUDA check
MODULES = (
    "s3rt.configs",
    "s3rt.errors",
    "s3rt.runtime.compare",
    "s3rt.benchmarks.davis_eval",
    "s3rt.benchmarks.kernel_bench",
    "s3rt.kernels.masked_query_attention.reference",
    "s3rt.kernels.masked_query_attention.torch_op",
    "s3rt.runtime.backends.cuda.env",
    "s3rt.runtime.backends.cuda.memory",
    "s3rt.runtime.backends.pytorch.backend",
    "s3rt.runtime.io.synthetic",
    "s3rt.runtime.tracker",
    "s3rt.training.evaluate",
    "s3rt.training.trained",
)
NO_CUDA, NO_TORCH = 2, 3
HEADS, QUERIES = 8, 16


# -- running from a plain checkout ------------------------------------------------------------------
def use_this_checkout(repo: Path = REPO) -> None:
    """Import `s3rt` and its subpackages from `repo`, whether or not (or wherever else) it is installed.

    pyproject.toml maps s3rt.<name> to the top-level folder <name> (s3rt.runtime -> runtime/, ...);
    with `repo` first on sys.path and in `s3rt.__path__`, Python's own finder resolves exactly that
    mapping, so no `pip install` (which a machine without network may not manage) is needed.
    """
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]    # not benchmarks/ itself
    sys.path.insert(0, str(repo))
    for name in [m for m in sys.modules if m == "s3rt" or m.startswith("s3rt.")]:
        del sys.modules[name]
    import s3rt
    if Path(s3rt.__file__).resolve().parent != repo / "s3rt":
        raise ImportError(f"s3rt resolved to {s3rt.__file__}, not to the checkout {repo}")
    if str(repo) not in s3rt.__path__:
        s3rt.__path__.append(str(repo))


# -- the table ---------------------------------------------------------------------------------------
class Table:
    """Markdown rows printed and appended to `out` as they come (flushed: a kill keeps them)."""

    HEADER = ("| step | case | result | figures |", "|---|---|---|---|")

    def __init__(self, out: str | Path | None, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.failed = 0
        self._file = open(out, "w") if out else None
        for line in self.HEADER:
            self._write(line)

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def row(self, step: str, case: str, result: str, figures: str = "") -> None:
        cells = (str(c).replace("|", "/").replace("\n", " ") for c in (step, case, result, figures))
        self._write("| " + " | ".join(cells) + " |")

    def run(self, step: str, rows: Callable[[], Iterable[tuple[str, str, str]]], *, deadline: float | None = None) -> bool:
        """Write the (case, result, figures) rows `rows()` yields; an exception becomes a FAILED row."""
        if deadline is not None and time.monotonic() > deadline:
            self.row(step, "", "skipped: time budget spent")
            return False
        try:
            for case, result, figures in rows():
                if result.startswith(("FAILED", "MISMATCH")):
                    self.failed += 1
                self.row(step, case, result, figures)
        except Exception as exc:  # noqa: BLE001 - the reason goes into the table, the check goes on
            self.failed += 1
            self.row(step, "", f"FAILED: {type(exc).__name__}: {exc}")
            return False
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# -- steps ------------------------------------------------------------------------------------------
def _command_version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not on PATH"
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {exc}"
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"exit {done.returncode}"


def _module_version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        return f"not importable ({type(exc).__name__}: {exc})"
    return str(getattr(module, "__version__", "?"))


def environment_rows() -> Iterator[tuple[str, str, str]]:
    yield "python", platform.python_version(), f"{sys.executable}, {os.cpu_count()} CPUs, {platform.machine()}"
    yield "nvcc", _command_version(["nvcc", "--version"]), ""
    yield "ninja", _command_version(["ninja", "--version"]), "torch extensions build with it"
    yield "cuda-bindings", _module_version("cuda.bindings"), "device memory step"
    yield "onnxruntime", _module_version("onnxruntime"), ""


def import_rows(modules: Iterable[str] = MODULES, repo: Path = REPO) -> Iterator[tuple[str, str, str]]:
    """One row per module: where it was imported from (it must be this checkout) or why not."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - one row per failure
            yield name, f"FAILED: {type(exc).__name__}: {exc}", ""
            continue
        path = Path(getattr(module, "__file__", "") or "").resolve()
        if repo not in path.parents:
            yield name, f"FAILED: imported from {path}, not from the checkout {repo}", ""
        else:
            yield name, "ok", str(path.relative_to(repo))


def torch_state() -> tuple[Any, str]:
    """(torch or None, a phrase): 'torch cannot be imported (...)' and 'no CUDA device' kept apart."""
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken install is as fatal as a missing one
        return None, f"torch cannot be imported ({type(exc).__name__}: {exc})"
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return torch, f"no CUDA device (torch {torch.__version__}, {build}; torch.cuda.is_available() is False)"
    return torch, (f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}, "
                   f"{torch.cuda.device_count()} device(s))")


def cuda_major_mismatch(nvcc_version: str, torch_cuda: str | None) -> str | None:
    """Why torch cannot build a CUDA extension with this nvcc (different CUDA majors), or None."""
    m = re.search(r"release (\d+)\.(\d+)", nvcc_version)
    if m is None or not torch_cuda or m.group(1) == torch_cuda.split(".")[0]:
        return None
    return (f"nvcc is CUDA {m.group(1)}.{m.group(2)}, torch is built for CUDA {torch_cuda}: torch refuses to build "
            f"extensions across CUDA majors (put a CUDA {torch_cuda.split('.')[0]} toolkit first: CUDA_HOME and PATH)")


def kernel_build_rows() -> Iterator[tuple[str, str, str]]:
    import torch

    from s3rt.kernels.masked_query_attention import torch_op
    nvcc = shutil.which("nvcc")
    mismatch = cuda_major_mismatch(subprocess.run([nvcc, "--version"], capture_output=True, text=True,
                                                  timeout=30).stdout if nvcc else "", torch.version.cuda)
    if mismatch:
        yield "nvcc vs torch", f"warning: {mismatch}", ""
    start = time.perf_counter()
    torch_op.load_cuda_extension()          # MissingDependencyError with nvcc's / ninja's reason
    yield "masked_query_gather extension", "ok", f"{time.perf_counter() - start:.1f} s (cached builds are faster)"


def tie_inputs(bn: int, p: int, q: int, channels: int = 256, seed: int = 0):
    """Inputs whose every score is exact in fp32 and fp16 whatever the summation order, with many ties:
    pixel vectors of +-1 (four distinct ones repeated along P, some doubled: same direction) and
    query keys of +-1/16, so each head's score is an integer / 256."""
    import numpy as np
    rng = np.random.default_rng(seed)
    distinct = rng.choice([-1.0, 1.0], size=(bn, 4, channels)).astype(np.float32)
    pixel = distinct[:, np.arange(p) % 4]                                    # (BN, P, C)
    pixel[:, 1::6] *= 2.0
    query_key = rng.choice([-1.0, 1.0], size=(bn, q, channels)).astype(np.float32) / 16.0
    return pixel, query_key, rng.random((bn, p)) < 0.4


def masked_inputs(bn: int, p: int, q: int, channels: int = 256, seed: int = 0):
    """Random inputs in which object 0 has no foreground and the last has no background (every
    query of one half fully masked: the all-blocked rule applies)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    pixel = rng.normal(size=(bn, p, channels)).astype(np.float32)
    query_key = rng.normal(size=(bn, q, channels)).astype(np.float32)
    query_key /= np.linalg.norm(query_key, axis=-1, keepdims=True)
    foreground = rng.random((bn, p)) < 0.3
    foreground[0], foreground[-1] = False, True
    return pixel, query_key, foreground


def compare_gather(got: tuple[Any, Any], pixel, query_key, foreground, heads: int, *, exact: bool,
                   tie_gap: float = 1e-5) -> tuple[str, str]:
    """(result, figures) of a kernel's (gathered, index) against the numpy reference.

    exact: indices and outputs must be identical (exact-tie inputs). Otherwise an index may differ
    only where the reference's best two scores are within `tie_gap` (rounding can flip those).
    """
    import numpy as np

    from s3rt.kernels.masked_query_attention import reference
    gathered, index = (np.asarray(x) for x in got)
    ref_g, ref_i = reference.masked_query_gather_numpy(pixel, query_key, foreground, heads)
    differ = index != ref_i                                                  # (BN, H, Q)
    same_q = ~differ.any(axis=1)                                             # (BN, Q)
    max_diff = float(np.abs(gathered.astype(np.float64) - ref_g)[same_q].max()) if same_q.any() else 0.0
    if exact:
        ok = not differ.any() and max_diff == 0.0
        bad = "" if ok else f"{int(differ.sum())} indices differ"
    else:
        gap = reference.top2_gap_numpy(reference.masked_query_scores_numpy(pixel, query_key, foreground, heads))
        far = differ & (gap >= tie_gap)
        ok = not far.any()
        bad = "" if ok else f"{int(far.sum())} indices differ where the top-2 gap is >= {tie_gap:g}"
    figures = (f"index agree {100 * (1 - differ.mean()):.2f} % of {differ.size}, "
               f"max abs diff {max_diff:.2e} where all heads agree")
    return ("ok" if ok else f"MISMATCH: {bad}"), figures


def kernel_parity_rows() -> Iterator[tuple[str, str, str]]:
    import torch

    from s3rt.kernels.masked_query_attention import torch_op
    ext = torch_op.load_cuda_extension()
    cases = [("480p P=1620, BN=4, objects 0 and 3 fully masked", masked_inputs(4, 1620, QUERIES, seed=1), False),
             ("exact ties (+-1 pixels), BN=3, P=200", tie_inputs(3, 200, QUERIES, seed=2), True)]
    for name, (pixel, query_key, foreground), exact in cases:
        for dtype in (torch.float32, torch.float16):
            px = torch.from_numpy(pixel).cuda().to(dtype)
            qk = torch.from_numpy(query_key).cuda().to(dtype)
            got = ext.masked_query_gather(px, qk, torch.from_numpy(foreground).cuda(), HEADS)
            torch.cuda.synchronize()
            # the reference sees what the kernel saw: inputs rounded to dtype, compared in fp32
            result, figures = compare_gather((got[0].float().cpu().numpy(), got[1].cpu().numpy()),
                                             px.float().cpu().numpy(), qk.float().cpu().numpy(), foreground,
                                             HEADS, exact=exact, tie_gap=1e-5 if dtype == torch.float32 else 1e-3)
            yield f"{name}, {'fp32' if dtype == torch.float32 else 'fp16'}", result, figures


def kernel_speed_rows(iters: int = 30) -> Iterator[tuple[str, str, str]]:
    from s3rt.benchmarks import kernel_bench
    for r in kernel_bench.run(queries=QUERIES, heads=HEADS, iters=iters, repeats=3, warmup=3, seed=0):
        yield (f"{r['size']} N={r['N']} {r['dtype']}", f"{r['speedup']:.2f}x",
               f"fused {r['fused_ms']:.4f} ms, unfused {r['unfused_ms']:.4f} ms, index agree "
               f"{100 * r['index_agree']:.2f} %")


def memory_ops_check(ops: Any, seed: int = 0) -> list[str]:
    """Run the tracker's buffer operations through `ops` (empty/upload/copy_/add_/fill_/to_host) and
    through numpy side by side; return the mismatches (empty list = all equal, bit for bit)."""
    import numpy as np
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


def memory_rows(load_cudart: Callable[[], Any] | None = None) -> Iterator[tuple[str, str, str]]:
    from s3rt.runtime.backends.cuda.env import bindings_version
    from s3rt.runtime.backends.cuda.memory import CudaMemory
    if load_cudart is None:
        try:
            from cuda.bindings import runtime as cudart
        except Exception as exc:  # noqa: BLE001 - reported in the table
            yield "CudaMemory vs numpy", f"not run: cuda-bindings not importable ({type(exc).__name__}: {exc})", ""
            return
    else:
        cudart = load_cudart()
    mem = CudaMemory(cudart, 0)              # BackendError names the driver/runtime pairing
    try:
        bad = memory_ops_check(mem)
    finally:
        mem.close()
    yield ("CudaMemory vs numpy (strided copies, fills, adds)", "ok" if not bad else "MISMATCH: " + "; ".join(bad),
           f"cuda-bindings {bindings_version()}")


def default_configs(configs: Mapping[str, Any] | None = None) -> list[str]:
    """tiny, then every full-size model config s3rt.configs defines, in its order (S3's and, once
    defined, Cutie's): new configs join the check without editing it."""
    if configs is None:
        from s3rt.configs import CONFIGS as configs
    return ["tiny"] + [name for name in configs if not name.startswith("tiny")]


def tracker_run(config: str, device: str, precision: str, frames: list, mask, *, weights: str | None = None,
                settings: Any = None) -> tuple[list, float]:
    """(probabilities (N+1, H, W) per frame, FPS over frames[1:]) of one tracker run."""
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    probs, start = [], None
    with TorchBackend(config, device=device, seed=0, precision=precision, weights=weights) as backend:
        tracker = Tracker(backend, settings, max_short_side=None)
        for i, f in enumerate(frames):
            if i == 1:
                if device.startswith("cuda"):
                    import torch
                    torch.cuda.synchronize()
                start = time.perf_counter()
            probs.append(tracker.step(f, mask=mask if i == 0 else None, end=i == len(frames) - 1).probabilities)
    fps = (len(frames) - 1) / (time.perf_counter() - start) if start is not None else float("nan")
    return probs, fps


def trained_tiny_rows(clips: int = 2, frames: int = 20, devices: tuple[str, ...] = ("cuda",),
                      precisions: tuple[str, ...] = ("fp32", "fp16")) -> Iterator[tuple[str, str, str]]:
    """The shipped trained tiny weights on held-out clips at their training size (96x160, memory every
    frame as `s3rt demo` runs): J&F of each run against the ground truth, mask IoU against CPU fp32."""
    from s3rt.configs import InferenceConfig
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker
    from s3rt.training.evaluate import held_out_clips, jf_score, mean_mask_iou, track
    from s3rt.training.trained import has_trained_weights, trained_weights
    if not has_trained_weights("tiny"):
        yield "trained tiny", "not run: the trained tiny weights are not in this checkout", ""
        return
    data = held_out_clips(clips, num_frames=frames, height=96, width=160)
    settings = InferenceConfig(mem_every=1)
    case = f"trained tiny, {clips} held-out clips x {frames} frames, 96x160"
    ref = None
    for device, precision in [("cpu", "fp32")] + [(d, p) for d in devices for p in precisions]:
        with TorchBackend("tiny", device=device, precision=precision, weights=str(trained_weights("tiny"))) as backend:
            labels = [track(lambda: Tracker(backend, settings, max_short_side=None), c)[0] for c in data]
        jf = jf_score([c.masks for c in data], labels)["J&F"]
        if ref is None:
            ref = labels
            yield f"{case}: {device} {precision} (reference)", f"J&F {jf:.3f}", ""
        else:
            yield f"{case}: {device} {precision}", f"J&F {jf:.3f}", f"mask IoU vs cpu fp32 {mean_mask_iou(ref, labels):.4f}"


def tracker_rows(config: str, *, height: int, width: int, frames: int, cpu_frames: int,
                 devices: tuple[str, ...] = ("cuda",),
                 precisions: tuple[str, ...] = ("fp32", "fp16")) -> Iterator[tuple[str, str, str]]:
    """One config at height x width: CPU fp32 on the first `cpu_frames` frames (the reference), then
    each device at fp32 and fp16 over `frames` frames: max |dp| and argmax agreement vs CPU, FPS."""
    from s3rt.runtime.compare import frame_agreement
    from s3rt.runtime.io.synthetic import make_clip
    from s3rt.training.trained import has_trained_weights, trained_weights
    clip, masks = make_clip(frames, height, width, num_objects=2, seed=0)
    weights = str(trained_weights(config)) if has_trained_weights(config) else None
    what = f"{config} {height}x{width}" + (" (trained weights)" if weights else " (seeded random weights)")
    ref, cpu_fps = tracker_run(config, "cpu", "fp32", clip[:cpu_frames], masks[0], weights=weights)
    yield f"{what}: cpu fp32, {cpu_frames} frames (reference)", "ok", f"{cpu_fps:.2f} FPS"
    for device in devices:
        for precision in precisions:
            probs, fps = tracker_run(config, device, precision, clip, masks[0], weights=weights)
            diffs, agree = frame_agreement(ref, probs[:cpu_frames])
            yield (f"{what}: {device} {precision}, {frames} frames",
                   f"max abs dp {max(diffs):.3g}, argmax agreement min {min(agree):.4f}", f"{fps:.1f} FPS")


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", help="comma-separated model configs (default: tiny and every full-size config)")
    p.add_argument("--frames", type=int, default=12, help="frames per CUDA tracker run, the first is the mask frame")
    p.add_argument("--cpu-frames", type=int, default=3, help="frames of the CPU fp32 reference run (default 3)")
    p.add_argument("--height", type=int, default=480, help="frame height (default 480)")
    p.add_argument("--width", type=int, default=854, help="frame width (default 854)")
    p.add_argument("--skip-kernel", action="store_true", help="skip the kernel build, parity and speed steps")
    p.add_argument("--budget", type=float, default=330.0, help="seconds after which no step starts (default 330)")
    p.add_argument("--out", help="also write the markdown table here, row by row")
    args = p.parse_args(argv)
    deadline = time.monotonic() + args.budget
    table = Table(args.out)
    try:
        table.run("environment", environment_rows)
        table.run("imports", import_rows)
        torch, state = torch_state()
        if torch is None or not torch.cuda.is_available():
            table.row("torch", "CUDA", state)
            print(f"gpu_check: {state}; nothing measured", file=sys.stderr)
            return NO_TORCH if torch is None else NO_CUDA
        table.row("torch", "CUDA", "ok", state)
        torch.set_num_threads(os.cpu_count() or 1)          # the CPU reference uses every core
        if not args.skip_kernel:
            if table.run("kernel build", kernel_build_rows, deadline=deadline):
                table.run("kernel vs reference", kernel_parity_rows, deadline=deadline)
                table.run("kernel speed", kernel_speed_rows, deadline=deadline)
        table.run("device memory", memory_rows, deadline=deadline)
        table.run("tracker", trained_tiny_rows, deadline=deadline)
        configs = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else default_configs()
        for config in configs:
            table.run("tracker", lambda c=config: tracker_rows(c, height=args.height, width=args.width,
                                                               frames=args.frames, cpu_frames=args.cpu_frames),
                      deadline=deadline)
        return 1 if table.failed else 0
    finally:
        table.close()


if __name__ == "__main__":
    use_this_checkout()
    sys.exit(main())
