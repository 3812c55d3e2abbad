"""The s3rt command line: help text, an end-to-end run, outputs on disk, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from s3rt.cli.main import main
from s3rt.runtime.io.files import davis_palette


@pytest.fixture()
def clip_dir(tmp_path, blob_clip):
    frames, mask = blob_clip
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / f"{i:05d}.jpg", quality=95)
    m = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = davis_palette()
    palette[3:6] = [10, 200, 30]                  # a custom colour for id 1, must survive
    m.putpalette(palette)
    m.save(tmp_path / "mask.png")
    extra = tmp_path / "masks"
    extra.mkdir()
    late = np.zeros_like(mask, dtype=np.uint8)
    late[5:15, 5:15] = 7
    late_png = Image.fromarray(late, mode="P")
    late_png.putpalette(davis_palette())
    late_png.save(extra / "00003.png")
    return d, tmp_path / "mask.png", extra, palette


def test_help_explains_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for cmd in ("run", "export", "validate", "eval", "demo"):
        assert cmd in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in ("--config", "--weights", "--frames", "--mask", "--masks", "--out", "--backend", "--save-probs",
                 "--device", "--mem-every", "--size"):
        assert flag in text


def test_run_writes_masks_probabilities_and_report(tmp_path, clip_dir, capsys):
    frames, mask, extra, palette = clip_dir
    out = tmp_path / "out"
    code = main(["run", "--config", "tiny", "--frames", str(frames), "--mask", str(mask), "--masks", str(extra),
                 "--out", str(out), "--save-probs", "--no-progress"])
    assert code == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(6)]
    first = Image.open(pngs[0])
    assert first.mode == "P" and first.getpalette()[3:6] == [10, 200, 30]
    assert set(np.unique(np.array(Image.open(pngs[4])))) <= {0, 1, 2, 7}
    probs = np.load(out / "00004.npy")
    assert probs.dtype == np.float32 and probs.shape == (4, 60, 100)     # background, ids 1, 2, 7 (sorted)
    assert np.allclose(probs.sum(0), 1, atol=1e-5)
    assert np.load(out / "00000.npy").shape == (3, 60, 100)
    assert (out / "report.json").is_file() and "random weights" in (out / "report.md").read_text()
    assert "wrote 6 masks" in capsys.readouterr().out


def test_user_errors_are_one_line_and_exit_1(tmp_path, clip_dir, capsys):
    frames, mask, _, _ = clip_dir
    bad = tmp_path / "small.png"
    Image.fromarray(np.ones((10, 10), np.uint8), mode="L").save(bad)
    code = main(["run", "--config", "tiny", "--frames", str(frames), "--mask", str(bad), "--out", str(tmp_path / "o"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("s3rt run: error:") and "--resize-masks" in err[-1]
    code = main(["run", "--backend", "onnxruntime", "--frames", str(frames), "--mask", str(mask),
                 "--out", str(tmp_path / "o")])
    assert code == 1 and "--model DIR" in capsys.readouterr().err
    code = main(["run", "--config", "tiny", "--frames", str(tmp_path / "nope"), "--mask", str(mask),
                 "--out", str(tmp_path / "o")])
    assert code == 1 and "frames folder not found" in capsys.readouterr().err


def test_export_then_validate_then_run_onnxruntime(tmp_path, clip_dir, capsys):
    frames, mask, _, _ = clip_dir
    model = tmp_path / "model"
    assert main(["export", "--config", "tiny-r50", "--height", "60", "--width", "100", "--out", str(model),
                 "--max-objects", "3"]) == 0
    assert main(["validate", "--model", str(model)]) == 0
    text = capsys.readouterr().out
    assert "| real | memory_readout | pixel_readout |" in text and "parity: OK" in text
    assert main(["run", "--model", str(model), "--backend", "onnxruntime", "--frames", str(frames),
                 "--mask", str(mask), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert len(list((tmp_path / "o").glob("*.png"))) == 6
