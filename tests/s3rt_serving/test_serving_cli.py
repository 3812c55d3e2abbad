"""`s3rt serve` (a real subprocess) + `s3rt stream` == `s3rt run` on the same clip; --help texts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("grpc", reason="serving tests need the serve extra (grpcio)")

from conftest import start_server  # noqa: E402
from s3rt_serving.serving_helpers import make_clip, save_frames  # noqa: E402
from s3rt.cli.main import main  # noqa: E402


def test_help_texts():
    for cmd in ("serve", "stream"):
        out = subprocess.run([sys.executable, "-m", "s3rt.cli.main", cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "--" in out.stdout
        assert "(default" in out.stdout


def test_serve_and_stream_write_the_masks_of_an_offline_run(tiny_model, tmp_path):
    frames, mask = make_clip(12, seed=4)
    clip = save_frames(tmp_path / "clip", frames)
    first = tmp_path / "first.png"
    Image.fromarray(np.where(mask == 2, 7, mask).astype(np.uint8), mode="L").save(first)   # ids 1 and 7
    assert main(["run", "--model", str(tiny_model), "--backend", "onnxruntime", "--threads", "1", "--frames",
                 str(clip), "--mask", str(first), "--out", str(tmp_path / "offline"), "--no-progress"]) == 0
    proc = start_server(tiny_model, "--max-streams", "2")
    try:
        port = proc.port
        served = tmp_path / "served"
        assert main(["stream", "--server", f"127.0.0.1:{port}", "--frames", str(clip), "--mask", str(first),
                     "--out", str(served), "--every-frame", "--overlay-dir", str(tmp_path / "ov")]) == 0
        for i in range(12):
            a = np.asarray(Image.open(tmp_path / "offline" / f"{i:05d}.png"))
            b = np.asarray(Image.open(served / f"{i:05d}.png"))
            np.testing.assert_array_equal(a, b)
        assert set(np.unique(b)) <= {0, 1, 7}
        assert len(list((tmp_path / "ov").glob("*.jpg"))) == 12
    finally:
        proc.terminate()
        assert proc.wait(20) == 0                     # SIGTERM: clean shutdown


def test_bench_stream_reports_offline_and_served_side_by_side(tiny_model, tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--stream", "--model", str(tiny_model), "--height", "64", "--width", "96", "--frames", "8",
                 "--threads", "1", "--rates", "0", "--json", str(out)]) == 0
    import json
    r = json.loads(out.read_text())
    ev = r["served_every_frame"]
    assert ev["complete"] and ev["results"] == 11 and ev["dropped_total"] == 0      # 3 warm-up + 8
    assert r["offline"]["ms_per_frame"] > 0 and "overhead" in r
    rt = r["realtime"][0]
    assert rt["results"] + rt["dropped_total"] + rt["errors"] == 11
