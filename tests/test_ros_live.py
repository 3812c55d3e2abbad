"""The real `s3rt-ros-node` process with real rclpy (ROS 2 Kilted wheels) and a real rclpy client.

One node serves most tests (started once, remapped as a user would: namespace /front, image
topic /front_camera/image_raw); signal tests start their own. DDS stays on this machine (a random
ROS_DOMAIN_ID per run, localhost discovery). Every wait is bounded.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

import ros_helpers  # noqa: E402
import ros_live  # noqa: E402
from ros_helpers import H, N_FRAMES, W  # noqa: E402

NS, CAMERA_TOPIC = "/front", "/front_camera/image_raw"
T0 = 1_700_000_000_000_000_000
PERIOD = 33_333_333


@pytest.fixture(scope="module")
def live_env():
    env = ros_live.require_live()
    import rclpy

    rclpy.init(domain_id=ros_live.DOMAIN_ID)
    yield env
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def reference(ros_tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("live_clip")
    frames, masks = ros_helpers.write_clip(root)
    return frames, masks, ros_helpers.run_reference(ros_tiny_model, root)


@pytest.fixture(scope="module")
def node(live_env, ros_tiny_model, tmp_path_factory):
    proc = ros_live.NodeProcess(live_env, tmp_path_factory.mktemp("node") / "node.log", ros_tiny_model,
                                "-r", f"__ns:={NS}", "-r", f"image:={CAMERA_TOPIC}",
                                params={"qos_reliability": "reliable", "qos_depth": 1, "threads": 1})
    try:
        proc.wait_ready()
        yield proc
    finally:
        code = proc.stop(signal.SIGTERM)
        assert code == 0 and "Traceback" not in proc.text(), proc.text()[-3000:]


@pytest.fixture(scope="module")
def client(node):
    c = ros_live.Client(NS, image_topic=CAMERA_TOPIC)
    c.connected()
    yield c
    c.close()


def _send(client, rgb, i, *, compressed=False):
    msg = (ros_live.compressed_msg if compressed else ros_live.image_msg)(rgb, T0 + i * PERIOD, "front_cam")
    (client.compressed_pub if compressed else client.image_pub).publish(msg)
    return T0 + i * PERIOD


def _timing_for(client, stamp):
    return client.wait(lambda: [t for t in client.timing() if t["stamp_ns"] == stamp], f"timing of {stamp}")[0]


def _add(client, ids, *, masks=(), boxes=()):
    from s3rt_interfaces.srv import AddObjects

    req = AddObjects.Request()
    req.ids, req.masks, req.boxes = list(ids), list(masks), [float(b) for b in boxes]
    return client.call(client.add, req)


def _reset(client):
    from std_srvs.srv import Trigger

    assert client.call(client.reset, Trigger.Request()).success


def test_frames_before_any_object_get_a_no_objects_record(client, reference):
    """Item 5: no silent vanishing; the record carries the frame's stamp and frame_id."""
    frames = reference[0]
    stamp = _send(client, frames[0], 900)
    rec = _timing_for(client, stamp)
    assert rec["status"] == "no_objects" and rec["frame_id"] == "front_cam" and "add_objects" in rec["reason"]
    assert client.got["mask"] == []


def test_masks_equal_s3rt_run_headers_copied_string_ids(client, reference):
    """Image in, add_objects by masks with string ids; mask / detections / timing out; masks equal
    `s3rt run` pixel for pixel; stamps and frame_id copied. Frames are sent one at a time."""
    frames, masks, ref = reference
    client.clear()
    reply = _add(client, ["cup", "pen"], masks=[ros_live.mono8_mask(masks[0] == k) for k in (1, 2)])
    assert reply.success, reply.message
    assert list(reply.ids) == ["cup", "pen"] and list(reply.labels) == [1, 2]
    latencies = []
    for i in range(N_FRAMES):
        sent_ns = time.perf_counter_ns()
        stamp = _send(client, frames[i], i)
        mask = client.wait(lambda: [m for m in client.got["mask"] if ros_live.stamp_of(m) == stamp], f"mask {i}")[0]
        latencies.append((client.arrival_ns[stamp] - sent_ns) / 1e6)
        assert mask.header.frame_id == "front_cam" and (mask.height, mask.width) == (H, W)
        np.testing.assert_array_equal(np.frombuffer(bytes(mask.data), np.uint8).reshape(H, W), ref[i],
                                      err_msg=f"frame {i}")
    client.wait(lambda: len(client.got["detections"]) == N_FRAMES, "detections")
    det = client.got["detections"][0]
    assert ros_live.stamp_of(det) == T0 and det.header.frame_id == "front_cam"
    assert {d.id for d in det.detections} == {"cup", "pen"}
    assert {d.results[0].hypothesis.class_id for d in det.detections} == {"cup", "pen"}
    ok = client.wait(lambda: [t for t in client.timing() if t["status"] == "ok"][N_FRAMES - 1:] and
                     [t for t in client.timing() if t["status"] == "ok"], "a timing record per frame")
    assert len(ok) == N_FRAMES and all(t["frame_id"] == "front_cam" and t["inference_ms"] > 0 for t in ok)
    print(f"node latency publish->mask (tiny {H}x{W}, frames 1..{N_FRAMES - 1}): "
          f"median {np.median(latencies[1:]):.1f} ms, max {max(latencies[1:]):.1f} ms")
    _reset(client)


def test_compressed_input_under_remapping_boxes_remove_reset(client, reference):
    """Item 3: `-r image:=/front_camera/image_raw` moves the compressed subscription to
    /front_camera/image_raw/compressed (image_transport), never /front/image/compressed.
    CompressedImage in; add by box; remove_object; reset."""
    frames = reference[0]
    assert client.node.count_subscribers(f"{CAMERA_TOPIC}/compressed") == 1
    assert client.node.count_subscribers(f"{NS}/image/compressed") == 0
    client.clear()
    reply = _add(client, ["box"], boxes=[20, 10, 60, 40])
    assert reply.success and list(reply.labels) == [1], reply.message
    for i in range(3):
        stamp = _send(client, frames[i], 100 + i, compressed=True)
        assert _timing_for(client, stamp)["status"] == "ok"
    client.wait(lambda: len(client.got["detections"]) == 3, "detections of the compressed frames")
    assert all([d.id for d in m.detections] == ["box"] for m in client.got["detections"])

    from s3rt_interfaces.srv import RemoveObject

    bad = client.call(client.remove, RemoveObject.Request(id="nope"))
    assert not bad.success and "unknown object ids ['nope']" in bad.message
    assert client.call(client.remove, RemoveObject.Request(id="box")).success
    stamp = _send(client, frames[3], 103, compressed=True)
    assert _timing_for(client, stamp)["status"] == "no_objects"
    refused = _add(client, ["a", "b"], boxes=[1, 2, 3])
    assert not refused.success and "2 ids need 8 box numbers" in refused.message
    _reset(client)


def _param_service(client, srv_type, name):
    cli = client.node.create_client(srv_type, f"{NS}/s3rt/{name}")
    assert cli.wait_for_service(timeout_sec=20), f"{NS}/s3rt/{name} not available"
    return cli


def _set(client, **values):
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    cli = _param_service(client, SetParameters, "set_parameters")
    req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return client.call(cli, req).results


def test_parameters_tell_the_truth(client, reference):
    """Item 2: read-only parameters refuse changes, with descriptions; live ones are applied
    (deadline_ms at once: a tiny deadline drops every frame; qos_depth re-creates the subscriptions)."""
    from rcl_interfaces.srv import DescribeParameters, GetParameters

    frames, masks, _ = reference
    desc = client.call(_param_service(client, DescribeParameters, "describe_parameters"),
                        DescribeParameters.Request(names=["model_dir", "max_objects", "deadline_ms", "qos_depth"]))
    by_name = {d.name: d for d in desc.descriptors}
    assert by_name["model_dir"].read_only and by_name["max_objects"].read_only
    assert not by_name["deadline_ms"].read_only and not by_name["qos_depth"].read_only
    assert "s3rt export" in by_name["model_dir"].description and "dropped" in by_name["deadline_ms"].description

    (r,) = _set(client, model_dir="/elsewhere")
    assert not r.successful and "read-only" in r.reason
    (r,) = _set(client, qos_depth=0)
    assert not r.successful and "qos_depth must be >= 1" in r.reason
    (r,) = _set(client, mask_encoding="rgb8")
    assert not r.successful and "mask_encoding must be" in r.reason

    assert _add(client, ["cup"], masks=[ros_live.mono8_mask(masks[0] == 1)]).success
    assert _timing_for(client, _send(client, frames[0], 200))["status"] == "ok"   # carries the masks
    (r,) = _set(client, deadline_ms=0.001)
    assert r.successful, r.reason
    rec = _timing_for(client, _send(client, frames[1], 201))
    assert rec["status"] == "dropped" and rec["reason"] == "deadline", rec
    assert all(r.successful for r in _set(client, deadline_ms=0.0, qos_depth=3, mask_encoding="mono16"))
    got = client.call(_param_service(client, GetParameters, "get_parameters"),
                      GetParameters.Request(names=["deadline_ms", "qos_depth"]))
    assert [v.double_value for v in got.values[:1]] == [0.0] and got.values[1].integer_value == 3
    client.wait(lambda: client.image_pub.get_subscription_count() == 1, "the re-created image subscription")
    stamp = _send(client, frames[2], 202)
    assert _timing_for(client, stamp)["status"] == "ok"
    mask = client.wait(lambda: [m for m in client.got["mask"] if ros_live.stamp_of(m) == stamp], "mono16 mask")[0]
    assert mask.encoding == "mono16"
    assert all(r.successful for r in _set(client, qos_depth=1, mask_encoding="auto"))
    client.wait(lambda: client.image_pub.get_subscription_count() == 1, "the re-created image subscription")
    _reset(client)


def test_latest_frame_wins_under_a_fast_publisher(client, reference):
    """40 frames published back to back into a 50-deep reliable subscription (every frame reaches
    the node): the node drops what the model cannot keep up with (latest wins), reports each drop
    in timing (status, reason, running drops_total) and publishes a mask for every frame it processed."""
    frames, masks, _ = reference
    assert all(r.successful for r in _set(client, qos_depth=50))
    client.wait(lambda: client.image_pub.get_subscription_count() == 1, "the re-created image subscription")
    client.clear()
    assert _add(client, ["cup"], masks=[ros_live.mono8_mask(masks[0] == 1)]).success
    stamps = [_send(client, frames[i % N_FRAMES], 300 + i) for i in range(40)]
    client.wait(lambda: any(t["stamp_ns"] == stamps[-1] for t in client.timing()), "the last frame's timing", 60)
    records = client.timing()
    client.wait(lambda: len(client.timing()) >= 40, "a timing record per frame")
    records = client.timing()
    assert sorted(t["stamp_ns"] for t in records) == stamps, "each frame reported exactly once"
    dropped = [t for t in records if t["status"] == "dropped"]
    ok = [t for t in records if t["status"] == "ok"]
    assert dropped and ok and {t["reason"] for t in dropped} <= {"superseded", "deadline"}
    assert max(t["drops_total"] for t in records) >= len(dropped)
    client.wait(lambda: len(client.got["mask"]) == len(ok), "a mask per processed frame")
    assert {ros_live.stamp_of(m) for m in client.got["mask"]} == {t["stamp_ns"] for t in ok}
    assert all(r.successful for r in _set(client, qos_depth=1))
    _reset(client)


def test_idle_node_uses_under_2_percent_of_a_core(node, client):
    """Item 4: CPU time of the node process over 10 s of silence, from /proc (not wall clock)."""
    time.sleep(1.0)                                  # let the last results settle
    before = node.cpu_seconds()
    time.sleep(10.0)
    used = node.cpu_seconds() - before
    print(f"idle node: {used:.3f} s CPU in 10 s")
    assert used / 10.0 < 0.02, f"idle node used {used:.2f} s CPU in 10 s ({used * 10:.1f} % of a core)"


@pytest.mark.parametrize("sig,ignore_sigint", [(signal.SIGTERM, False), (signal.SIGINT, False),
                                               (signal.SIGINT, True)],
                         ids=["SIGTERM", "SIGINT", "SIGINT-ignored-at-start"])
def test_signals_end_the_node_with_exit_0(live_env, ros_tiny_model, tmp_path, sig, ignore_sigint):
    """Item 1: what launch, docker stop and systemd send ends the node cleanly: exit 0, no traceback."""
    proc = ros_live.NodeProcess(live_env, tmp_path / "node.log", ros_tiny_model, "-r", "__ns:=/sig",
                                ignore_sigint=ignore_sigint, params={"threads": 1})
    try:
        proc.wait_ready()
        time.sleep(0.3)                              # inside rclpy.spin
    finally:
        code = proc.stop(sig)
    log = proc.text()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "ExternalShutdownException" not in log, log[-3000:]


def test_launcher_starts_a_node_per_camera_and_stops_them(live_env, ros_tiny_model, tmp_path, client):
    """ros/launch/s3rt_cameras.py (the wheels have no `ros2 launch`): two cameras, two nodes in
    their namespaces answering their services; SIGTERM to the launcher ends both, exit 0."""
    import subprocess
    import sys

    from std_srvs.srv import Trigger

    log = open(tmp_path / "launch.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ros_live.REPO / "ros/launch/s3rt_cameras.py"), "--model-dir",
                             str(ros_tiny_model), "--camera", "left=/left_cam/image", "--camera",
                             "right=/right_cam/image", "-p", "threads:=1"], env=live_env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        for cam in ("left", "right"):
            reset = client.node.create_client(Trigger, f"/{cam}/reset")
            assert reset.wait_for_service(timeout_sec=60), f"/{cam}/reset never came up"
            assert client.call(reset, Trigger.Request()).success
        assert client.node.count_subscribers("/left_cam/image/compressed") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    text = (tmp_path / "launch.log").read_text(errors="replace")
    assert code == 0 and "Traceback" not in text, text[-3000:]
