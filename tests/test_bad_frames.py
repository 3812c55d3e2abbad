"""`s3rt run --on-bad-frame`: a corrupt frame is skipped (or stops the run) and never costs the masks around it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from s3rt.cli.main import main
from s3rt.runtime.io.files import atomic_write, frame_or_error


@pytest.fixture()
def clips(tmp_path, blob_clip):
    """The same clip twice: `good/` as is, `bad/` with frame 00003 corrupt (truncated JPEG bytes)."""
    frames, mask = blob_clip
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(good / f"{i:05d}.png")
    shutil.copytree(good, bad)
    (bad / "00003.png").write_bytes((good / "00003.png").read_bytes()[:40])
    Image.fromarray(mask.astype(np.uint8), mode="P").save(tmp_path / "mask.png")
    return good, bad, tmp_path / "mask.png", len(frames)


def _run(frames, mask, out, *extra):
    return main(["run", "--config", "tiny", "--frames", str(frames), "--mask", str(mask), "--out", str(out),
                 "--no-progress", *extra])


def test_skip_leaves_every_other_mask_equal_to_a_run_without_the_frame(tmp_path, clips):
    good, bad, mask, n = clips
    without = tmp_path / "without"
    shutil.copytree(good, without)
    (without / "00003.png").unlink()
    assert _run(without, mask, tmp_path / "ref") == 0
    assert _run(bad, mask, tmp_path / "out") == 0                     # skip is the default
    out_names = sorted(p.name for p in (tmp_path / "out").glob("0*.png"))
    assert out_names == sorted(p.name for p in (tmp_path / "ref").glob("0*.png"))
    assert "00003.png" not in out_names and len(out_names) == n - 1
    for name in out_names:     # the tracker never saw the bad frame: identical masks, pixel for pixel
        a = np.array(Image.open(tmp_path / "out" / name))
        b = np.array(Image.open(tmp_path / "ref" / name))
        assert np.array_equal(a, b), name
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["bad_frames"]["count"] == 1
    assert report["bad_frames"]["skipped"][0]["frame"] == "00003"
    assert "corrupt" in report["bad_frames"]["skipped"][0]["error"]
    assert "bad frames skipped: 1" in (tmp_path / "out" / "report.md").read_text()


def test_fail_stops_at_the_bad_frame_and_keeps_earlier_masks(tmp_path, clips, capsys):
    good, bad, mask, _ = clips
    code = _run(bad, mask, tmp_path / "out", "--on-bad-frame", "fail")
    assert code != 0
    err = capsys.readouterr().err
    assert "frame 00003" in err and "--on-bad-frame fail" in err
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["00000.png", "00001.png", "00002.png"]
    for name in written:                       # complete, decodable masks; no temporary files left
        Image.open(tmp_path / "out" / name).load()
    assert not list((tmp_path / "out").glob(".*.part"))


def test_a_corrupt_first_frame_cannot_be_skipped(tmp_path, clips, capsys):
    good, bad, mask, _ = clips
    (bad / "00000.png").write_bytes(b"not an image")
    assert _run(bad, mask, tmp_path / "out") != 0
    assert "first frame 00000" in capsys.readouterr().err


def test_a_frame_of_another_size_is_skipped(tmp_path, clips):
    good, bad, mask, n = clips
    shutil.copy(good / "00003.png", bad / "00003.png")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(bad / "00004.png")
    assert _run(bad, mask, tmp_path / "out") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [b["frame"] for b in report["bad_frames"]["skipped"]] == ["00004"]
    assert "10x12" in report["bad_frames"]["skipped"][0]["error"]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "m.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("stopped")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_frame_or_error_names_the_file(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"\xff\xd8garbage")
    rec = frame_or_error(p)
    assert rec.image is None and not rec.ok and "x.jpg" in rec.error
