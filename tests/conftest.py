"""Shared test fixtures: paths to ../shared (skipped with a reason when absent), small clips."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from s3rt.runtime.io.synthetic import first_frame_clip

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("S3RT_SHARED", REPO.parent / "shared"))
SPEC = SHARED / "spec"
JUDO = SHARED / "data" / "clips" / "images" / "judo"
JUDO_MASKS = SHARED / "data" / "clips" / "masks" / "judo"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (tests read ../shared at run time; set S3RT_SHARED to override)")
    return path


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return require(SPEC, "the shared state-dict manifests")


@pytest.fixture(scope="session")
def judo_clip() -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """The 16 judo frames shrunk to 120x214 and their masks (frames 0, 5, 8, 13) resized to match."""
    from PIL import Image
    require(JUDO, "the judo clip")
    size = (214, 120)
    frames = [np.asarray(Image.open(p).convert("RGB").resize(size, Image.BILINEAR)) for p in sorted(JUDO.glob("*.jpg"))]
    masks = {int(p.stem): np.asarray(Image.open(p).resize(size, Image.NEAREST)).astype(np.int64)
             for p in sorted(JUDO_MASKS.glob("*.png"))}
    return frames, masks


@pytest.fixture(scope="session")
def blob_clip() -> tuple[list[np.ndarray], np.ndarray]:
    """A tiny deterministic clip (6 frames, 60x100, not multiples of 32) and its 2-object first mask."""
    return first_frame_clip(6, 60, 100, num_objects=2, seed=0)


TINY_H, TINY_W = 64, 96       # multiples of 32: no padding; small enough for 4 streams x 300 frames on 2 cores


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny config exported once per session (read-only: copy it before writing beside it).

    64x96, seeded random weights (seed 2: masks keep both objects of the synthetic clip for a
    while), at most 4 objects in 3 object groups; no parity check here (test_export_onnxruntime
    checks the export itself). Used by the serving, ROS, bench and TensorRT tests.
    """
    pytest.importorskip("torch", reason="the export needs torch")
    from s3rt.export.onnx_export import export_model

    out = tmp_path_factory.mktemp("tiny_model")
    export_model("tiny", out_dir=out, height=TINY_H, width=TINY_W, max_objects=4, max_buckets=3, seed=2,
                 check_parity=False)
    return out


@pytest.fixture(scope="session")
def ros_tiny_model(tiny_model: Path) -> Path:
    """The ROS tests' name for the session's tiny model."""
    return tiny_model


def start_server(model_dir: Path, *args: str) -> subprocess.Popen:
    """`s3rt serve --model model_dir --threads 1 --port 0 ARGS` in its own process; `proc.port` is the
    port it listens on. Its log goes to a file, not a pipe: a server logs a line per stream, and a pipe
    nobody reads fills up (64 KiB) and blocks the server's threads in the middle of opening streams."""
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "s3rt.cli.main", "serve", "--model", str(model_dir),
                             "--threads", "1", "--port", "0", *args], stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        log.seek(0)
        pytest.fail(f"server did not start: {line} {log.read()[-3000:]}")
    proc.port = int(line.rsplit(":", 1)[1])
    return proc
