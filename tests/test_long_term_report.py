"""`s3rt run --long-term --memory-report`: the per-frame sizes reproduce LONG_TERM_MEMORY.md §10
(small-limits setting, object 2 added on frame 3 from --masks), in JSON and CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from s3rt.cli.main import main
from test_long_term import SPEC_TRACE, lt_clip


def _write_clip(root, n=15):
    frames, masks = lt_clip(n)
    (root / "frames").mkdir()
    (root / "masks").mkdir()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(root / "frames" / f"{t:05d}.png")
    Image.fromarray(masks[0].astype(np.uint8)).save(root / "first.png")
    Image.fromarray(masks[3].astype(np.uint8)).save(root / "masks" / "00003.png")
    return root / "frames", root / "first.png", root / "masks"


def test_memory_report_reproduces_spec_trace(tmp_path, capsys):
    frames, first, extra = _write_clip(tmp_path)
    args = ["run", "--config", "tiny", "--frames", str(frames), "--mask", str(first), "--masks", str(extra),
            "--size", "0", "--mem-every", "1", "--lt-preset", "small", "--max-buckets", "2", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "o1"), "--memory-report", str(tmp_path / "mem.json")]) == 0
    report = json.loads((tmp_path / "mem.json").read_text())
    assert report["tokens_per_frame"] == 64 and report["long_term"]["num_prototypes"] == 16
    frames_ = report["frames"]
    assert len(frames_) == 15
    for t, sizes in SPEC_TRACE.items():
        got = [(b["working"], b["long_term"]) for b in frames_[t]["buckets"]]
        assert got == sizes, f"frame {t}: {got} != spec {sizes}"
        assert [b["permanent"] for b in frames_[t]["buckets"]] == [64] * len(sizes)
    assert [b["objects"] for b in frames_[3]["buckets"]] == [[1, 3], [2]]
    # spec §10: b0 pruned 64 -> 32 on frame 11, then +16
    ev11 = [(e["bucket"], e["kind"], e["tokens_before"], e["tokens_after"]) for e in frames_[11]["events"]]
    assert ev11 == [(0, "prune", 64, 32), (0, "consolidate", 32, 48)]
    assert len({f["name"] for f in frames_}) == 15

    # CSV: one row per frame and bucket, the same numbers
    assert main([*args, "--out", str(tmp_path / "o2"), "--memory-report", str(tmp_path / "mem.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "mem.csv").open()))
    assert len(rows) == 3 + 2 * 12                        # 1 bucket on frames 0-2, 2 buckets on 3-14
    r11 = [r for r in rows if r["frame"] == "11"]
    assert [(r["working"], r["long_term"], r["events"]) for r in r11] == [("64", "48", "prune+consolidate"),
                                                                          ("128", "48", "")]


def test_bench_long_term_side_by_side(tmp_path, capsys):
    out = tmp_path / "lt.json"
    assert main(["bench", "--long-term", "--lt-preset", "small", "--config", "tiny", "--height", "128", "--width", "128",
                 "--frames", "26", "--mem-every", "1", "--backends", "torch", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| torch | fifo |" in table and "| torch | long_term |" in table and "slope" in table
    r = json.loads(out.read_text())["backends"]["torch"]
    assert r["fifo"]["state_constant"] and r["long_term"]["state_constant"]
    assert r["long_term"]["state_bytes_warm"] > r["fifo"]["state_bytes_warm"]       # LT buffers + counters
    assert r["long_term"]["events"]["consolidate"] == 12 and r["long_term"]["events"]["prune"] >= 3
    assert r["fifo"]["memory_sizes_end"][0]["long_term"] == 0
    assert isinstance(r["long_term"]["slope_ms_per_1000_frames"], float)
