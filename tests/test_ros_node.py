"""The ROS 2 node's logic with rclpy absent (rosbags message classes stand in for rclpy's), and the
rclpy wiring where rclpy exists."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags not installed (pip install 's3rt[ros]')")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

import ros_helpers  # noqa: E402
from ros_helpers import H, W  # noqa: E402
from s3rt.runtime.backends import make_backend  # noqa: E402
from s3rt.runtime.serving.ros import convert, messages  # noqa: E402
from s3rt.runtime.serving.ros.node_logic import NodeParams, SegmentationNodeLogic, mask_from_labels  # noqa: E402
from s3rt.runtime.serving.ros.core_session import CoreSession  # noqa: E402
from s3rt.runtime.tracker import Tracker  # noqa: E402


@pytest.fixture(scope="module")
def kit():
    return messages.RosbagsKit()


def _image(kit, rgb, i, encoding="bgr8"):
    src = rgb[..., ::-1].copy() if encoding == "bgr8" else rgb
    return messages.image(kit, messages.header(kit, 1000 + i, "cam"), convert.encode_image(src, encoding))


def _tracker(model):
    backend = make_backend("onnxruntime", model_dir=model, threads=1)
    return Tracker(backend, None)


def _logic(model, kit, **kw):
    return SegmentationNodeLogic(CoreSession.open(_tracker(model)), kit, NodeParams(model_dir=str(model)), sync=True,
                                 **kw)


def test_node_logic_equals_the_tracker_and_copies_headers(ros_tiny_model, kit):
    frames, masks = ros_helpers.clip()
    logic = _logic(ros_tiny_model, kit)
    (key, status), = logic.on_image(_image(kit, frames[0], 0))     # no objects yet: reported, not silent
    assert key == "timing" and logic.counts["no_objects"] == 1
    assert json.loads(status.data)["status"] == "no_objects" and json.loads(status.data)["frame_id"] == "cam"
    m = [messages.image(kit, messages.header(kit, 0, ""), convert.encode_image(mask_from_labels(masks[0], k), "mono8"))
         for k in (1, 2)]
    reply = logic.add_objects(["cup", "pen"], masks=m)
    assert reply.success and dict(zip(reply.ids, reply.labels)) == {"cup": 1, "pen": 2}
    ref_tracker = _tracker(ros_tiny_model)
    for i, f in enumerate(frames):
        out = dict(logic.on_image(_image(kit, f, i)))
        ref_result = ref_tracker.step(f, mask=masks[0] if i == 0 else None)
        ref = ref_result.index_mask
        mask = out["mask"]
        assert (mask.header.stamp.nanosec, mask.header.frame_id) == (1000 + i, "cam")
        np.testing.assert_array_equal(convert.decode_image(mask)[..., 0], ref)
        assert {d.id for d in out["detections"].detections} == {("cup", "pen")[v - 1] for v in np.unique(ref) if v}
        for d in out["detections"].detections:     # score = mean probability of the object inside its mask
            label = {"cup": 1, "pen": 2}[d.id]
            probs = ref_result.probabilities[ref_result.object_ids.index(label) + 1]
            assert d.results[0].hypothesis.score == pytest.approx(float(probs[ref == label].mean()), abs=1e-6)
        rec = json.loads(out["timing"].data)
        assert rec["status"] == "ok" and rec["seq"] == i + 1 and rec["inference_ms"] > 0
    assert logic.counts == {"received": 9, "processed": 8, "dropped": 0, "errors": 0, "no_objects": 1}


def test_node_services_and_bad_input(ros_tiny_model, kit):
    frames, masks = ros_helpers.clip()
    logic = _logic(ros_tiny_model, kit)
    bad = messages.image(kit, messages.header(kit, 5, "cam"), convert.encode_image(frames[0], "rgb8"))
    bad.encoding = "yuv422"
    (key, timing), = logic.on_image(bad)
    assert key == "timing" and "unsupported image encoding 'yuv422'" in json.loads(timing.data)["error"]
    assert not logic.add_objects(["a"], boxes=[0, 0, 10, 10]).success          # frame size not known yet
    logic.on_image(_image(kit, frames[0], 0))
    r = logic.add_objects(["a", "b"], boxes=[5, 5, 30, 30])
    assert not r.success and "2 ids need 8 box numbers" in r.message
    r = logic.add_objects(["a", "a"], boxes=[0] * 8)
    assert not r.success and "unique" in r.message
    r = logic.add_objects(["box"], boxes=[10, 8, 40, 30])
    assert r.success and r.labels == [1]
    out = dict(logic.on_image(_image(kit, frames[1], 1)))
    assert "mask" in out
    r = logic.remove_object("nope")
    assert not r.success and "unknown object ids ['nope']" in r.message     # the core's ObjectIdError
    assert logic.remove_object("box").success and logic.objects == {}
    (key, timing), = logic.on_image(_image(kit, frames[2], 2))     # nothing tracked: reported, waits
    assert key == "timing" and json.loads(timing.data)["status"] == "no_objects"
    assert logic.reset().success
    small = messages.image(kit, messages.header(kit, 0, ""), convert.encode_image(np.zeros((8, 8), np.uint8), "mono8"))
    r = logic.add_objects(["x"], masks=[small])
    assert not r.success and f"masks must be {H}x{W}" in r.message


def test_node_params_are_checked():
    with pytest.raises(Exception, match="model_dir is required"):
        NodeParams().check()
    with pytest.raises(Exception, match="qos_depth must be >= 1"):
        NodeParams(model_dir="m", qos_depth=0).check()
    assert NodeParams(model_dir="m").check().qos_depth == 1


def test_ros_modules_import_without_torch_or_rclpy():
    """The adapters are torch-free and import rclpy only when a node is created."""
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('torch', 'rclpy', 'sensor_msgs', 'std_msgs', 'vision_msgs'): sys.modules[m] = None\n"
            "import s3rt.runtime.serving.ros.convert, s3rt.runtime.serving.ros.messages, s3rt.runtime.serving.ros.bag, "
            "s3rt.runtime.serving.ros.bag_replay, s3rt.runtime.serving.ros.node_logic, s3rt.runtime.serving.ros.node, "
            "s3rt.runtime.serving.ros.core_session\n"
            "from s3rt.runtime.serving.ros.node import main\n"
            "assert main([]) == 1\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "optional dependency 'rclpy' is needed here" in proc.stderr and "source a ROS 2" in proc.stderr


def test_node_logic_live_policy_accounts_for_every_frame(ros_tiny_model, kit):
    """Frames arriving faster than the model: latest wins, each frame gets exactly one timing record."""
    frames, masks = ros_helpers.clip()
    session = CoreSession.open(_tracker(ros_tiny_model), realtime=True)
    logic = SegmentationNodeLogic(session, kit, NodeParams(model_dir=str(ros_tiny_model)))
    try:
        m = messages.image(kit, messages.header(kit, 0, ""), convert.encode_image(masks[0].astype(np.uint8), "mono8"))
        assert logic.add_objects(["both"], masks=[m]).success
        out = []
        for i in range(40):                          # a burst: no pause between frames
            out += logic.on_image(_image(kit, frames[i % len(frames)], i))
        for _ in range(200):
            if logic.counts["processed"] + logic.counts["dropped"] == 40:
                break
            out += logic.drain(timeout_s=0.05)
        seqs = sorted(json.loads(msg.data)["seq"] for key, msg in out if key == "timing")
        assert seqs == list(range(40))
        assert logic.counts["dropped"] > 0 and logic.counts["processed"] == sum(k == "mask" for k, _ in out)
        stamps = {msg.header.stamp.nanosec for key, msg in out if key == "mask"}
        assert stamps <= {1000 + i for i in range(40)}
    finally:
        session.close()
