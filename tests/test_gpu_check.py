"""The prepared GPU check rehearsed on CPU (issue 24): it runs from a plain copy of the checkout, imports
every module its GPU steps use before it stops at "no CUDA device", tells a missing torch apart,
writes its table row by row, turns a failing step into a row and goes on, and its CPU-runnable
steps (parity comparison, device memory on a simulated stream, tracker rows) give real figures."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s3rt.benchmarks import gpu_check
from tests.conftest import REPO

CHECKOUT_PARTS = ("s3rt", "export", "runtime", "kernels", "benchmarks", "training", "pyproject.toml")


def _no_cuda() -> None:
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run benchmarks/gpu_check.sh itself")


def _rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in path.read_text().splitlines()[2:]]


def test_script_from_a_plain_copy_stops_at_no_cuda_device_after_every_import(tmp_path):
    """gpu_check.sh in a copy of the checkout (no install): the copy's own modules are imported, not the
    installed (editable) ones, all of them, and the table ends on the "no CUDA device" row."""
    _no_cuda()
    copy = tmp_path / "checkout"
    for part in CHECKOUT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
        else:
            shutil.copy2(src, copy / part)
    out = tmp_path / "table.md"
    done = subprocess.run(["bash", str(copy / "benchmarks" / "gpu_check.sh"), str(out)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == gpu_check.NO_CUDA, done.stdout[-3000:] + done.stderr[-2000:]
    assert "no CUDA device" in done.stderr
    rows = _rows(out)
    imported = {r[1]: r[2] for r in rows if r[0] == "imports"}
    assert set(imported) == set(gpu_check.MODULES) and set(imported.values()) == {"ok"}, imported
    assert rows[-1][:2] == ["torch", "CUDA"] and rows[-1][2].startswith("no CUDA device (torch ")
    assert gpu_check.main(["--configs", "tiny", "--out", str(tmp_path / "again.md")]) == gpu_check.NO_CUDA


def test_torch_that_cannot_be_imported_is_not_no_cuda_device(tmp_path):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: libtorch_cuda.so: cannot open shared object file')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake")}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "t.md")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == gpu_check.NO_TORCH, done.stderr[-2000:]
    last = _rows(tmp_path / "t.md")[-1]
    assert last[2] == "torch cannot be imported (ImportError: simulated: libtorch_cuda.so: cannot open shared object file)"
    assert "no CUDA device" not in done.stderr
    # the modules that import torch at import time say so in their own rows; the torch-free ones load
    imports = {r[1]: r[2] for r in _rows(tmp_path / "t.md") if r[0] == "imports"}
    assert imports["s3rt.runtime.tracker"] == "ok" and imports["s3rt.runtime.backends.cuda.memory"] == "ok"


def test_every_module_a_step_imports_is_rehearsed():
    """Each `import s3rt...` / `from s3rt... import` in gpu_check.py names a module listed in MODULES."""
    tree = ast.parse(Path(gpu_check.__file__).read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s3rt"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                used.add(sub if importlib.util.find_spec(node.module).submodule_search_locations is not None
                         and importlib.util.find_spec(sub) is not None else node.module)
        elif isinstance(node, ast.Import):
            used |= {a.name for a in node.names if a.name.startswith("s3rt")}
    used.discard("s3rt")                              # use_this_checkout's own import of the package
    assert used and used <= set(gpu_check.MODULES), sorted(used - set(gpu_check.MODULES))


def test_rows_are_written_as_they_come_and_a_failing_step_goes_on(tmp_path):
    out = tmp_path / "t.md"
    table = gpu_check.Table(out, stream=open(os.devnull, "w"))
    seen_on_disk = []

    def step():
        yield "first", "ok", "1 | 2"
        seen_on_disk.append(out.read_text().splitlines()[-1])       # before the step continues
        raise RuntimeError("ninja: build stopped: subcommand failed")

    assert not table.run("kernel build", step)
    assert table.run("device memory", lambda: iter([("CudaMemory", "ok", "")]))
    assert not table.run("tracker", lambda: iter([("late", "ok", "")]), deadline=0.0)
    table.close()
    assert seen_on_disk == ["| kernel build | first | ok | 1 / 2 |"]
    assert _rows(out) == [["kernel build", "first", "ok", "1 / 2"],
                          ["kernel build", "", "FAILED: RuntimeError: ninja: build stopped: subcommand failed", ""],
                          ["device memory", "CudaMemory", "ok", ""],
                          ["tracker", "", "skipped: time budget spent", ""]]
    assert table.failed == 1


def test_configs_come_from_s3rt_configs():
    from s3rt.configs import CONFIGS
    listed = gpu_check.default_configs()
    assert listed[0] == "tiny" and {"s3-r50", "s3-base"} <= set(listed) and "tiny-r50" not in listed
    for cutie in ("cutie-small", "cutie-base"):
        assert (cutie in listed) == (cutie in CONFIGS)
    fake = dict.fromkeys(["s3-base", "s3-r50", "tiny", "tiny-r50", "cutie-small", "cutie-base"])
    assert gpu_check.default_configs(fake) == ["tiny", "s3-base", "s3-r50", "cutie-small", "cutie-base"]


def test_kernel_comparison_against_the_torch_reference():
    """The parity step's judge, fed by the torch reference (a second implementation) on CPU."""
    import torch

    from s3rt.kernels.masked_query_attention import reference
    heads = gpu_check.HEADS
    for inputs, exact in ((gpu_check.tie_inputs(3, 200, 16, seed=2), True),
                          (gpu_check.masked_inputs(4, 300, 16, seed=1), False)):
        pixel, query_key, foreground = inputs
        g, i = reference.masked_query_gather_torch(*(torch.from_numpy(x) for x in inputs), heads)
        result, figures = gpu_check.compare_gather((g.numpy(), i.numpy()), pixel, query_key, foreground, heads,
                                                   exact=exact)
        assert result == "ok", figures
        wrong = i.numpy().copy()
        wrong[0, 0, 0] = (wrong[0, 0, 0] + 1) % pixel.shape[1]
        assert gpu_check.compare_gather((g.numpy(), wrong), pixel, query_key, foreground, heads,
                                        exact=exact)[0].startswith("MISMATCH: 1 indices differ")
    # the tie inputs do tie, and the masked inputs have fully masked objects
    pixel, query_key, foreground = gpu_check.tie_inputs(3, 200, 16, seed=2)
    scores = reference.masked_query_scores_numpy(pixel, query_key, foreground, heads)
    assert (reference.top2_gap_numpy(scores) == 0).mean() > 0.5
    _, _, fg = gpu_check.masked_inputs(4, 300, 16)
    assert not fg[0].any() and fg[-1].all()


def test_device_memory_step_on_a_simulated_stream():
    from tests.test_cuda_memory import StreamSim
    rows = list(gpu_check.memory_rows(load_cudart=StreamSim))
    assert [r[1] for r in rows] == ["ok"]


def test_tracker_rows_on_cpu():
    rows = list(gpu_check.tracker_rows("tiny", height=64, width=96, frames=3, cpu_frames=2, devices=("cpu",),
                                       precisions=("fp32",)))
    assert rows[0][0] == "tiny 64x96 (trained weights): cpu fp32, 2 frames (reference)" and rows[0][1] == "ok"
    assert rows[1][1] == "max abs dp 0, argmax agreement min 1.0000"       # the CPU reference is deterministic
    assert rows[1][2].endswith(" FPS") and float(rows[1][2].split()[0]) > 0


def test_trained_tiny_rows_on_cpu():
    rows = list(gpu_check.trained_tiny_rows(clips=1, frames=4, devices=("cpu",), precisions=("fp32",)))
    jf = [float(r[1].split()[1]) for r in rows]
    assert len(rows) == 2 and jf[0] == jf[1] and 0 <= jf[0] <= 1
    assert rows[1][2] == "mask IoU vs cpu fp32 1.0000"


def test_nvcc_and_torch_cuda_majors():
    text = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.48\n"
    assert gpu_check.cuda_major_mismatch(text, "13.0") is None
    assert gpu_check.cuda_major_mismatch(text, None) is None                     # CPU torch: nothing to build
    assert gpu_check.cuda_major_mismatch("", "12.8") is None                     # no nvcc: the build says so
    assert gpu_check.cuda_major_mismatch(text, "12.8") == (
        "nvcc is CUDA 13.0, torch is built for CUDA 12.8: torch refuses to build extensions across CUDA majors "
        "(put a CUDA 12 toolkit first: CUDA_HOME and PATH)")
