"""The training loop: a stopped and resumed run equals an uninterrupted one, the exported fp16
state dict goes through the strict loader, the loss curve is drawn."""

from __future__ import annotations

import torch

from s3rt.export.model import build_model
from s3rt.training.train import main

ARGS = ["--frames", "3", "--height", "64", "--width", "64", "--steps", "3", "--threads", "1", "--save-every", "1"]


def test_resume_equals_uninterrupted_and_export_loads_strictly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(ARGS + ["--out", str(straight), "--export", str(tmp_path / "w.pt")]) == 0
    assert main(ARGS + ["--out", str(resumed), "--max-minutes", "0"]) == 0        # stops after one step
    first = torch.load(resumed / "checkpoint.pt", weights_only=False)
    assert first["step"] == 1
    assert main(ARGS + ["--out", str(resumed), "--resume"]) == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=False)
    b = torch.load(resumed / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 3
    assert [r["loss"] for r in a["log"]] == [r["loss"] for r in b["log"]]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert (straight / "loss_curve.png").stat().st_size > 1000
    # the shipped format: fp16 floats, loaded strictly into an fp32 model
    exported = torch.load(tmp_path / "w.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in exported.values() if v.is_floating_point())
    model = build_model("tiny", weights=tmp_path / "w.pt")
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, a["model"][k].half().float()), k
