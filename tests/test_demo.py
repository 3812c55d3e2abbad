"""`s3rt demo` end to end on one small held-out clip: report, pictures, masks, scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from s3rt.cli.main import main
from s3rt.training.trained import has_trained_weights

pytest.importorskip("onnxruntime")
pytest.importorskip("av")


def test_demo_writes_scores_sheet_and_video(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--clips", "1", "--frames", "8", "--height", "64", "--width", "96"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["backends"]) == {"torch", "onnxruntime"}
    for b in report["backends"].values():
        assert 0.0 <= b["J&F"] <= 1.0
    assert report["torch_vs_onnxruntime"]["min_argmax_agreement"] > 0.99
    if has_trained_weights("tiny"):
        assert "trained by s3rt" in report["weights"]
    sheet = np.asarray(Image.open(out / "overlay_sheet.png"))
    assert sheet.ndim == 3 and sheet.shape[0] >= 2 * 2 * 64          # tracked + ground-truth rows, zoom 2
    assert (out / "overlay.mp4").stat().st_size > 1000
    name = report["clips"]["names"][0]
    assert len(list((out / "masks_onnxruntime" / name).glob("*.png"))) == 8
    assert "What you are looking at" in (out / "report.md").read_text()
