"""Video in/out, DAVIS-layout datasets, the synthetic clip, the timing proxy and `s3rt bench` (CPU, fast)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s3rt.cli.main import main
from s3rt.errors import InputError, ShapeError
from s3rt.runtime.io.files import davis_palette
from s3rt.runtime.io.synthetic import make_clip

SHARED = Path(os.environ.get("S3RT_SHARED", Path(__file__).parents[1].parent / "shared"))
EXAMPLE_MP4 = SHARED / "data" / "clips" / "example.mp4"


def _example_mp4() -> Path:
    if not EXAMPLE_MP4.is_file():
        pytest.skip(f"shared example video not found at {EXAMPLE_MP4} (tests read ../shared at run time; "
                    "set S3RT_SHARED to override)")
    return EXAMPLE_MP4


def _write_index_png(path: Path, mask: np.ndarray) -> None:
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(davis_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


# -- synthetic clip -----------------------------------------------------------------------------------
def test_synthetic_clip_is_deterministic_and_annotated():
    f1, m1 = make_clip(5, 40, 56, 3, seed=7)
    f2, m2 = make_clip(5, 40, 56, 3, seed=7)
    assert len(f1) == len(m1) == 5
    assert all(f.shape == (40, 56, 3) and f.dtype == np.uint8 for f in f1)
    assert all(m.shape == (40, 56) and np.issubdtype(m.dtype, np.integer) for m in m1)
    assert all(np.array_equal(a, b) for a, b in zip(f1, f2))
    assert all(np.array_equal(a, b) for a, b in zip(m1, m2))
    assert set(np.unique(m1[0])) == {0, 1, 2, 3}           # every object visible on the mask frame
    assert not np.array_equal(m1[0], m1[-1])                # blobs move
    f3, _ = make_clip(5, 40, 56, 3, seed=8)
    assert not np.array_equal(f1[0], f3[0])
    # many objects in a small frame: still all visible on frame 0
    assert set(np.unique(make_clip(1, 16, 16, 8, seed=0)[1][0])) == set(range(9))


# -- video files ---------------------------------------------------------------------------------------
def test_run_video_writes_masks_and_overlay(tmp_path):
    pytest.importorskip("av")
    video = _example_mp4()
    import av
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        h, w = s.height, s.width
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4:3 * h // 4, w // 3:2 * w // 3] = 1
    _write_index_png(tmp_path / "mask.png", mask)
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"
    rc = main(["run", "--config", "tiny", "--video", str(video), "--mask", str(tmp_path / "mask.png"),
               "--max-frames", "8", "--size", "240", "--overlay", str(overlay), "--out", str(out), "--no-progress"])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(8)]
    with Image.open(pngs[-1]) as im:
        assert im.size == (w, h) and im.mode == "P"
    with av.open(str(overlay)) as c:
        frames = list(c.decode(c.streams.video[0]))
    assert len(frames) == 8
    assert (frames[0].width, frames[0].height) == (w, h)
    assert json.loads((out / "report.json").read_text())["frames"] == 8


def test_open_video_reads_rgb_names_fps():
    pytest.importorskip("av")
    from s3rt.runtime.io.video import open_video
    src = open_video(_example_mp4(), max_frames=3)
    frames = list(src.frames())
    assert [f.name for f in frames] == ["00000", "00001", "00002"]
    assert src.count == 3 and src.fps > 0
    assert frames[0].image.dtype == np.uint8 and frames[0].image.ndim == 3 and frames[0].image.shape[2] == 3


def test_corrupt_or_missing_video_is_an_input_error(tmp_path, capsys):
    pytest.importorskip("av")
    from s3rt.runtime.io.video import open_video
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not a readable video"):
        open_video(bad)
    with pytest.raises(InputError, match="not found"):
        open_video(tmp_path / "absent.mp4")
    if EXAMPLE_MP4.is_file():                                # header intact, index (moov) cut off
        cut = tmp_path / "truncated.mp4"
        cut.write_bytes(EXAMPLE_MP4.read_bytes()[:200_000])
        with pytest.raises(InputError):
            src = open_video(cut)
            list(src.frames())
    _write_index_png(tmp_path / "m.png", np.ones((32, 32), np.uint8))
    rc = main(["run", "--config", "tiny", "--video", str(bad), "--mask", str(tmp_path / "m.png"),
               "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 1
    assert "not a readable video" in capsys.readouterr().err


def test_overlay_writer_odd_size_and_colours(tmp_path):
    av = pytest.importorskip("av")
    from s3rt.runtime.io.video import VideoOverlayWriter, draw_overlay, palette_lut
    frames, masks = make_clip(4, 31, 45, 2, seed=1)
    path = tmp_path / "odd.mp4"
    with VideoOverlayWriter(path, palette=None, fps=12.5) as writer:
        for f, m in zip(frames, masks):
            writer.add(f, m)
        with pytest.raises(ShapeError):
            writer.add(frames[0], masks[0][:-1])
    with av.open(str(path)) as c:
        got = list(c.decode(c.streams.video[0]))
    assert len(got) == 4 and (got[0].width, got[0].height) == (46, 32)   # padded to even sizes
    lut = palette_lut(None)
    img = np.full((8, 8, 3), 100, np.uint8)
    m = np.zeros((8, 8), np.int64)
    m[2:6, 2:6] = 1
    o = draw_overlay(img, m, lut)
    assert (o[0, 0] == 100).all()                                       # background untouched
    assert (o[3, 3] == np.rint(0.5 * 100 + 0.5 * lut[1])).all()          # interior: 50 % blend
    assert (o[2, 2] == lut[1]).all()                                    # contour: the object's colour


def test_camera_that_cannot_open_is_an_input_error():
    pytest.importorskip("cv2")
    from s3rt.runtime.io.video import open_camera
    with pytest.raises(InputError, match="camera 97"):
        open_camera(97, max_frames=2)


# -- datasets ------------------------------------------------------------------------------------------
def _davis_layout(root: Path) -> dict[str, tuple[int, int]]:
    """Three sequences (two sizes); val = two of them; ground truth for every frame."""
    seqs = {"blobs-a": (64, 96, 2, 0), "blobs-b": (48, 80, 1, 1), "blobs-train": (64, 96, 1, 2)}
    for name, (h, w, k, seed) in seqs.items():
        frames, masks = make_clip(5, h, w, k, seed=seed)
        for i, (f, m) in enumerate(zip(frames, masks)):
            d = root / "JPEGImages" / "480p" / name
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(f).save(d / f"{i:05d}.jpg", quality=95)
            _write_index_png(root / "Annotations" / "480p" / name / f"{i:05d}.png", m)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("blobs-a\nblobs-b\n")
    return {n: (h, w) for n, (h, w, _, _) in seqs.items()}


def test_run_dataset_then_eval(tmp_path, capsys):
    root, out = tmp_path / "DAVIS", tmp_path / "pred"
    sizes = _davis_layout(root)
    rc = main(["run", "--config", "tiny", "--dataset", str(root), "--split", "val", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    for seq in ("blobs-a", "blobs-b"):
        pngs = sorted((out / seq).glob("*.png"))
        assert [p.stem for p in pngs] == [f"{i:05d}" for i in range(5)]
        with Image.open(pngs[0]) as im:
            assert im.size == sizes[seq][::-1]
        assert json.loads((out / seq / "report.json").read_text())["frames"] == 5
    assert not (out / "blobs-train").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["sequences"] == 2 and summary["total"]["frames"] == 10
    cmd = shlex.split(summary["eval_command"])
    assert cmd[:2] == ["s3rt", "eval"] and "--sequences" in cmd    # train sequence present in the GT
    capsys.readouterr()
    rc = main([*cmd[1:], "--json", str(tmp_path / "jf.json")])
    assert rc == 0
    res = json.loads((tmp_path / "jf.json").read_text())
    assert 0.0 <= res["J&F"] <= 1.0
    assert set(res["sequences"]) == {"blobs-a", "blobs-b"}


def test_dataset_errors_are_clear(tmp_path):
    from s3rt.runtime.io.dataset import iter_dataset
    root = tmp_path / "DAVIS"
    _davis_layout(root)
    with pytest.raises(InputError, match="split 'test'"):
        iter_dataset(root, "test")
    with pytest.raises(InputError, match="nope"):
        iter_dataset(root, "val", sequences=["nope"])
    assert [s.name for s in iter_dataset(root)] == ["blobs-a", "blobs-b", "blobs-train"]
    (root / "Annotations" / "480p" / "blobs-b" / "00000.png").unlink()
    with pytest.raises(InputError, match="first frame"):
        iter_dataset(root, "val")
    with pytest.raises(InputError, match="DAVIS-layout"):
        iter_dataset(tmp_path)


# -- timing proxy --------------------------------------------------------------------------------------
def test_timed_backend_counts_calls_per_graph():
    from s3rt.runtime.backends.base import Backend
    from s3rt.runtime.backends.timing import TimedBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker

    timed = TimedBackend(TorchBackend("tiny"))
    assert isinstance(timed, Backend)
    frames, masks = make_clip(7, 64, 96, 2, seed=0)
    with timed:
        tracker = Tracker(timed, max_short_side=None)
        assert tracker.backend is timed                      # open() keeps the proxy in front
        for i, f in enumerate(frames):
            tracker.step(f, mask=masks[0] if i == 0 else None)
        calls = timed.calls
        # every frame encodes; frames 1.. segment; memory on frame 0 and 5 (mem_every 5)
        assert calls["encoder"] == calls["spatial_semantic"] == 7
        assert calls["memory_readout"] == calls["query_attention"] == calls["mask_decoder"] == 6
        assert calls["mask_encoder"] == 2
        stats = timed.stats()
        assert stats["encoder"]["calls"] == 7 and stats["encoder"]["mean_ms"] > 0
        assert timed.describe()["backend"] == "torch"        # forwarded
        timed.reset_stats()
        assert timed.calls == {}


# -- bench -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench_result(tmp_path_factory):
    """`s3rt bench --config`: exports its own graphs (the bench needs capacity for 8 objects; the session's
    tiny_model holds 4, which the serving tests' capacity errors depend on)."""
    d = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--config", "tiny", "--height", "64", "--width", "96", "--frames", "4", "--warmup", "1",
               "--backends", "torch,onnxruntime", "--json", str(d / "b.json"), "--markdown", str(d / "b.md")])
    assert rc == 0
    return json.loads((d / "b.json").read_text()), d


def test_bench_json_schema(bench_result):
    res, d = bench_result
    assert set(res) >= {"backends", "ratios", "settings", "machine"}
    for name in ("torch", "onnxruntime"):
        r = res["backends"][name]
        assert r["fps"] > 0
        assert set(r["latency_ms"]) >= {"p50", "p95", "p99", "mean"}
        assert len(r["warmup_ms"]) == 1
        assert r["subgraphs"]["encoder"]["calls"] == 4 and r["subgraphs"]["encoder"]["mean_ms"] > 0
        assert r["peak_mem_mb"] > 0
    assert res["backends"]["torch"]["input_sha256"] == res["backends"]["onnxruntime"]["input_sha256"]
    assert res["ratios"]["onnxruntime/torch"] == pytest.approx(
        res["backends"]["onnxruntime"]["fps"] / res["backends"]["torch"]["fps"])
    assert 0 <= res["backends"]["onnxruntime"]["vs_torch"]["pixel_agreement"] <= 1
    assert set(res["machine"]) >= {"cpu", "cores", "python", "torch", "onnxruntime", "gpu"}
    assert res["settings"]["frames"] == 4 and res["settings"]["warmup"] == 1
    assert "| onnxruntime |" in (d / "b.md").read_text()


def test_bench_plot_or_clear_message(bench_result, tmp_path, capsys, monkeypatch):
    from s3rt.benchmarks import bench
    from s3rt.optional import optional
    res, _ = bench_result
    if bench.matplotlib.is_available():
        assert bench.write_plot(res, tmp_path / "p.png")
        assert (tmp_path / "p.png").stat().st_size > 1000
    monkeypatch.setattr(bench, "matplotlib", optional("s3rt_no_such_plot_module", extra="plot"))
    assert bench.write_plot(res, tmp_path / "q.png") is False
    assert "s3rt[plot]" in capsys.readouterr().err
    assert not (tmp_path / "q.png").exists()


def test_bench_memory_trace_worker():
    from s3rt.benchmarks.bench import run_worker
    from s3rt.configs import InferenceConfig
    from dataclasses import asdict
    spec = {"backend": "torch", "config": "tiny", "weights": None, "seed": 0, "model_dir": None, "device": "cpu",
            "provider": None, "threads": None, "opt_level": "all", "height": 48, "width": 64, "objects": 1,
            "frames": 6, "warmup": 1, "clip_seed": 0, "settings": asdict(InferenceConfig()), "trace_every": 2,
            "masks_out": None}
    r = run_worker(spec)
    t = r["memory_trace"]
    assert t["frame"] == [0, 2, 4, 5] and len(t["rss_mb"]) == 4
    assert t["last_mb"] - t["first_mb"] == pytest.approx(t["delta_mb"])
    assert isinstance(t["flat"], bool)


def test_bench_refuses_unknown_backend(capsys):
    rc = main(["bench", "--config", "tiny", "--height", "64", "--width", "96", "--frames", "2",
               "--backends", "torch,tensorflow"])
    assert rc == 1
    assert "unknown backend" in capsys.readouterr().err


# -- torch stays out of the runtime ----------------------------------------------------------------------
def test_new_runtime_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import s3rt.runtime.io.video, s3rt.runtime.io.dataset, s3rt.runtime.io.synthetic\n"
            "import s3rt.runtime.backends.timing, s3rt.benchmarks.bench, s3rt.cli.bench, s3rt.cli.run\n"
            "import s3rt.runtime.backends.registry, s3rt.runtime.evaluation.davis, s3rt.runtime.compare\n"
            "import s3rt.runtime.slot_store, s3rt.runtime.long_term, s3rt.cli.eval, s3rt.cli.demo, s3rt.cli.replay\n"
            "assert sys.modules['torch'] is None\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
