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


def test_mem_every_writes_memory_only_on_its_frames():
    """clip_log_odds over 5 frames: frame 1 reads frame 0's memory at mem_every 1 and 3 alike;
    frame 2 also reads frame 1's with mem_every 1 but not with 3; every later frame is predicted."""
    from s3rt.training.clip_model import clip_log_odds

    model = build_model("tiny", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 64, 64, generator=g)
    first = torch.zeros(1, 64, 64)
    first[0, 16:40, 20:44] = 1
    with torch.no_grad():
        every = clip_log_odds(model, images, first, mem_every=1)
        gaps = clip_log_odds(model, images, first, mem_every=3)
    assert len(every) == len(gaps) == 4 and every[0].shape == (1, 2, 64, 64)
    assert torch.equal(every[0], gaps[0])                   # frame 1: memory = frame 0 in both
    assert not torch.allclose(every[1], gaps[1])            # frame 2: frame 1 in memory only with mem_every 1


def test_schedule_lists_cycle_per_step():
    from s3rt.training.train import build_parser, step_schedule

    args = build_parser().parse_args(["--frames", "16,8", "--mem-every", "5,1", "--height", "64,96",
                                      "--width", "96,160"])
    assert [step_schedule(s, args) for s in range(3)] == [(16, 5, 64, 96), (8, 1, 96, 160), (16, 5, 64, 96)]
    plain = build_parser().parse_args([])
    assert step_schedule(7, plain) == (5, 1, 96, 160)
