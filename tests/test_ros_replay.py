"""`s3rt replay` on generated bags of the synthetic clip (tiny model, ONNX Runtime): masks equal
`s3rt run` on the same frames pixel for pixel, headers copied, counts consistent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags not installed (pip install 's3rt[ros]')")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

from PIL import Image  # noqa: E402

from s3rt.cli.main import main  # noqa: E402
from s3rt.runtime.io.files import write_index_mask  # noqa: E402
from s3rt.runtime.serving.ros import bag  # noqa: E402
from s3rt.runtime.io.synthetic import make_clip  # noqa: E402
from ros_helpers import H, N_FRAMES, TOPIC, W  # noqa: E402
import ros_helpers  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The synthetic clip as PNG frames + first mask, and `s3rt run`'s masks for it (the reference)."""
    root = tmp_path_factory.mktemp("clip")
    frames, masks = ros_helpers.write_clip(root)
    return frames, masks, root


@pytest.fixture(scope="module")
def run_masks(ros_tiny_model, clip):
    return ros_helpers.run_reference(ros_tiny_model, clip[2])


def _replay(ros_tiny_model, bag_in, out, *extra: str) -> int:
    return main(["replay", "--model", str(ros_tiny_model), "--backend", "onnxruntime", "--threads", "1", "--bag",
                 str(bag_in), "--image-topic", TOPIC, "--out-bag", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("storage,encoding", [("sqlite3", "rgb8"), ("mcap", "bgr8")])
def test_replay_masks_equal_s3rt_run(tmp_path, ros_tiny_model, clip, run_masks, storage, encoding):
    frames, _, root = clip
    stamps = bag.write_image_bag(tmp_path / "in", frames, storage=storage, encoding=encoding, frame_id="cam0",
                                 row_padding=8)
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "out", "--mask", str(root / "first.png"),
                   "--report", str(tmp_path / "r.json")) == 0
    assert (tmp_path / "out" / ("out.mcap" if storage == "mcap" else "out.db3")).is_file()
    masks = bag.read_topic(tmp_path / "out", "/s3rt/mask")
    dets = bag.read_topic(tmp_path / "out", "/s3rt/detections")
    timing = bag.read_topic(tmp_path / "out", "/s3rt/timing")
    assert len(masks) == len(dets) == len(timing) == N_FRAMES
    for i, (_, m) in enumerate(masks):
        assert m.encoding == "mono8" and (m.height, m.width, m.step) == (H, W, W)
        assert m.header.frame_id == "cam0" and m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamps[i]
        np.testing.assert_array_equal(m.data.reshape(H, W), run_masks[i])     # pixel for pixel
    for (_, d), ref in zip(dets, run_masks):
        visible = sorted(str(v) for v in np.unique(ref) if v)
        assert sorted(x.id for x in d.detections) == visible
        for x in d.detections:
            ys, xs = np.nonzero(ref == int(x.id))
            assert (x.bbox.size_x, x.bbox.size_y) == (xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    records = [json.loads(t.data) for _, t in timing]
    assert [r["seq"] for r in records] == list(range(N_FRAMES)) and {r["status"] for r in records} == {"ok"}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames_in"] == report["processed"] == N_FRAMES and report["dropped"] == {}
    assert report["written"] == {"mask": N_FRAMES, "detections": N_FRAMES, "timing": N_FRAMES}
    assert report["objects"] == {"1": 1, "2": 2}


def test_replay_compressed_with_prompts_and_bad_frames(tmp_path, ros_tiny_model, clip, run_masks):
    """String ids from a prompts file; a mid-bag size change becomes an error record, not a crash."""
    frames, masks, root = clip
    odd = make_clip(1, 32, 48, 1)[0][0]
    bag.write_image_bag(tmp_path / "in", [*frames[:3], odd, *frames[3:]], compressed="png")
    for k, name in ((1, "cup"), (2, "pen")):
        write_index_mask(tmp_path / f"{name}.png", (masks[0] == k).astype(np.int64), None)
    (tmp_path / "p.json").write_text(json.dumps({"objects": [{"id": "cup", "mask": "cup.png"},
                                                             {"id": "pen", "mask": "pen.png"}]}))
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "out", "--prompts", str(tmp_path / "p.json"),
                   "--report", str(tmp_path / "r.json")) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames_in"] == N_FRAMES + 1 and report["processed"] == N_FRAMES and report["errors"] == 1
    assert "frame size changed mid-bag" in report["error_details"][0] and report["objects"] == {"cup": 1, "pen": 2}
    masks_out = bag.read_topic(tmp_path / "out", "/s3rt/mask")
    for (_, m), ref in zip(masks_out, run_masks):      # PNG is lossless: same frames, same masks
        np.testing.assert_array_equal(m.data.reshape(H, W), ref)
    ids = {x.id for _, d in bag.read_topic(tmp_path / "out", "/s3rt/detections") for x in d.detections}
    assert ids == {"cup", "pen"}
    statuses = [json.loads(t.data)["status"] for _, t in bag.read_topic(tmp_path / "out", "/s3rt/timing")]
    assert statuses == ["ok"] * 3 + ["error"] + ["ok"] * (N_FRAMES - 3)


def test_replay_user_errors(tmp_path, ros_tiny_model, clip, capsys):
    frames, _, root = clip
    bag.write_image_bag(tmp_path / "in", frames[:2])
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "o1", "--mask", str(root / "first.png"),
                   "--image-topic", "/nope") == 1
    assert "no topic '/nope'; topics present: /camera/image_raw" in capsys.readouterr().err
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "o2") == 1
    assert "exactly one of --mask PNG or --prompts JSON" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_reference_masks_are_not_trivial(run_masks):
    """Guard for the equality tests (random weights, so masks mean nothing): varied, both ids present."""
    assert all({1, 2} <= set(np.unique(m).tolist()) for m in run_masks[:3])
    assert len({m.tobytes() for m in run_masks}) > 1


def _records(out):
    return [json.loads(t.data) for _, t in bag.read_topic(out, "/s3rt/timing")]


def test_realtime_replay_above_capacity_drops_and_keeps_latency_bounded(tmp_path, ros_tiny_model, clip):
    """30 frames recorded at 30 FPS played 50x faster (1500 FPS): far above what the model does."""
    frames, _, root = clip
    long = [frames[i % len(frames)] for i in range(30)]
    bag.write_image_bag(tmp_path / "in", long, storage="mcap")
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "out", "--mask", str(root / "first.png"),
                   "--realtime", "--rate", "50", "--report", str(tmp_path / "r.json")) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    records = _records(tmp_path / "out")
    ok = [r for r in records if r["status"] == "ok"]
    dropped = [r for r in records if r["status"] == "dropped"]
    assert sorted(r["seq"] for r in records) == list(range(30))          # every frame accounted for once
    assert report["frames_in"] == 30 == report["processed"] + sum(report["dropped"].values())
    assert len(ok) == report["processed"] == len(bag.read_topic(tmp_path / "out", "/s3rt/mask"))
    assert dropped and {r["reason"] for r in dropped} == {"superseded"} and report["dropped"]["superseded"] == len(dropped)
    # latest frame wins: a result waited for at most the one frame in flight, so end-to-end latency
    # stays under two inference times (a FIFO queue would grow to ~30 inference times here)
    worst_inference = max(r["inference_ms"] for r in ok)
    assert max(r["e2e_ms"] for r in ok[1:]) < 2 * worst_inference + 20.0
    assert 0 in [r["seq"] for r in ok]           # the prompted first frame is never dropped


def test_realtime_deadline_drops_stale_frames(tmp_path, ros_tiny_model, clip):
    frames, _, root = clip
    bag.write_image_bag(tmp_path / "in", [frames[i % len(frames)] for i in range(20)])
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "out", "--mask", str(root / "first.png"),
                   "--realtime", "--rate", "50", "--deadline-ms", "0.5", "--report", str(tmp_path / "r.json")) == 0
    records = _records(tmp_path / "out")
    late = [r for r in records if r.get("reason") == "deadline"]
    assert late and all(r["queue_ms"] > 0.5 for r in late)
    assert all(r["queue_ms"] <= 0.5 for r in records if r["status"] == "ok" and r["seq"] > 0)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["frames_in"] == report["processed"] + sum(report["dropped"].values()) == 20


@pytest.mark.parametrize("fault,code", [(KeyboardInterrupt, 130), ("backend", 1)])
def test_replay_stopped_mid_bag_leaves_a_complete_bag(tmp_path, ros_tiny_model, clip, run_masks, monkeypatch, fault, code):
    """An error injected on frame 4 (Ctrl-C, or a backend failure) stops the replay; the output bag
    holds frames 0-3, is indexed and readable, and its masks are the right ones."""
    from s3rt.errors import BackendError
    from s3rt.runtime.tracker import Tracker

    frames, _, root = clip
    bag.write_image_bag(tmp_path / "in", frames, storage="mcap")
    real = Tracker.step

    def faulty(self, frame, *args, **kwargs):       # under the session core: its own path, not a stand-in
        if self.frame_index == 4:
            raise KeyboardInterrupt if fault is KeyboardInterrupt else BackendError("device lost (injected)")
        return real(self, frame, *args, **kwargs)

    monkeypatch.setattr(Tracker, "step", faulty)
    assert _replay(ros_tiny_model, tmp_path / "in", tmp_path / "out", "--mask", str(root / "first.png"),
                   "--report", str(tmp_path / "r.json")) == code
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["processed"] == 4 and report["frames_in"] == 5
    assert report["stopped"] == ("interrupted (Ctrl-C)" if code == 130 else "error: device lost (injected)")
    assert (tmp_path / "out" / "metadata.yaml").is_file()
    masks = bag.read_topic(tmp_path / "out", "/s3rt/mask")
    assert len(masks) == 4 and len(bag.read_topic(tmp_path / "out", "/s3rt/timing")) == 4
    for (_, m), ref in zip(masks, run_masks):
        np.testing.assert_array_equal(m.data.reshape(H, W), ref)


def test_s3rt_run_reads_a_bag_with_the_replay_reader(tmp_path, ros_tiny_model, clip, run_masks, capsys):
    """`s3rt run --rosbag`: the same masks as from the PNG folder; a mid-bag size change is skipped
    and reported as `run` does for any bad frame."""
    frames, _, root = clip
    odd = make_clip(1, 32, 48, 1)[0][0]
    bag.write_image_bag(tmp_path / "in", [*frames[:3], odd, *frames[3:]], storage="mcap", encoding="bgr8")
    args = ["run", "--model", str(ros_tiny_model), "--backend", "onnxruntime", "--threads", "1", "--rosbag",
            str(tmp_path / "in"), "--mask", str(root / "first.png"), "--no-progress"]
    assert main([*args, "--image-topic", TOPIC, "--out", str(tmp_path / "out")]) == 0
    names = [f"{i:06d}" for i in (0, 1, 2, *range(4, N_FRAMES + 1))]           # topic positions; 3 was bad
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.png")) == names
    for name, ref in zip(names, run_masks):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f"{name}.png")), ref)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (bad,) = report["bad_frames"]["skipped"]
    assert bad["frame"] == "000003" and "frame size changed mid-bag" in bad["error"]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "o2")]) == 1
    assert "--rosbag DIR and --image-topic T go together" in capsys.readouterr().err
    assert main([*args, "--image-topic", "/nope", "--out", str(tmp_path / "o3")]) == 1
    assert "no topic '/nope'" in capsys.readouterr().err


@pytest.mark.parametrize("storage", bag.STORAGES)
def test_replay_killed_with_sigkill_keeps_what_it_wrote(tmp_path, ros_tiny_model, clip, run_masks, storage):
    """Issue 22: SIGKILL (no cleanup at all) mid-replay leaves a readable bag holding at least
    what metadata.yaml announced before the kill, and those masks are the right ones. The output
    has the input's storage: an MCAP output is left without summary/footer and is read up to its
    last complete chunk (flushed at most a second apart, like the sqlite3 commits)."""
    import signal
    import subprocess
    import sys
    import time

    from ruamel.yaml import YAML

    frames, _, root = clip
    bag.write_image_bag(tmp_path / "in", frames * 60, storage=storage)  # 480 frames: seconds of work
    cmd = [str(Path(sys.executable).with_name("s3rt")), "replay", "--model", str(ros_tiny_model), "--backend",
           "onnxruntime", "--threads", "1", "--bag", str(tmp_path / "in"), "--image-topic", TOPIC,
           "--out-bag", str(tmp_path / "out"), "--mask", str(root / "first.png"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    announced = 0
    try:
        until = time.monotonic() + 120
        while announced < 2 * N_FRAMES and time.monotonic() < until and proc.poll() is None:
            time.sleep(0.05)
            try:
                info = YAML(typ="safe").load((tmp_path / "out" / "metadata.yaml").read_text())
            except (OSError, AttributeError):
                continue
            counts = {t["topic_metadata"]["name"]: t["message_count"]
                      for t in info["rosbag2_bagfile_information"]["topics_with_message_count"]}
            announced = counts.get("/s3rt/mask", 0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, "the replay ended before it could be killed"
    assert announced >= 2 * N_FRAMES, proc.stderr.read().decode()[-2000:]
    assert (tmp_path / "out" / f"out.{'mcap' if storage == 'mcap' else 'db3'}").is_file()
    masks = bag.read_topic(tmp_path / "out", "/s3rt/mask")
    assert announced <= len(masks) < 60 * N_FRAMES
    for (_, m), ref in zip(masks[:N_FRAMES], run_masks):
        np.testing.assert_array_equal(m.data.reshape(H, W), ref)
