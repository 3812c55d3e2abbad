"""rosbag2 I/O (sqlite3 and MCAP): frames read back exactly, clear errors, per-frame error records,
and a result bag that stays complete when writing stops on an error."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags not installed (pip install 's3rt[ros]')")

from s3rt.errors import BagError  # noqa: E402
from s3rt.runtime.serving.ros import bag  # noqa: E402
from s3rt.runtime.io.synthetic import make_clip  # noqa: E402

TOPIC = "/camera/image_raw"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return make_clip(5, 40, 64, 2, seed=1)[0]


@pytest.mark.parametrize("storage", bag.STORAGES)
@pytest.mark.parametrize("encoding,compressed", [("rgb8", None), ("bgr8", None), ("rgba8", None),
                                                  ("rgb8", "png")])
def test_frames_read_back_exactly(tmp_path, frames, storage, encoding, compressed):
    stamps = bag.write_image_bag(tmp_path / "in", frames, storage=storage, encoding=encoding, compressed=compressed,
                                 row_padding=4 if not compressed else 0)
    with bag.ImageTopicReader(tmp_path / "in", TOPIC) as reader:
        assert reader.storage == storage and reader.count == len(frames)
        got = list(reader)
    assert [f.seq for f in got] == list(range(len(frames)))
    assert [f.stamp_ns for f in got] == stamps and all(f.header.frame_id == "camera" for f in got)
    for f, ref in zip(got, frames):
        assert f.error is None
        np.testing.assert_array_equal(f.image, ref)


def test_mono_bags_become_gray_rgb(tmp_path, frames):
    bag.write_image_bag(tmp_path / "m", frames, encoding="mono8")
    f = next(iter(bag.ImageTopicReader(tmp_path / "m", TOPIC)))
    gray = frames[0].mean(axis=2).round().astype(np.uint8)
    assert (f.image == gray[..., None]).all()


def test_missing_bag_empty_bag_and_missing_topic(tmp_path, frames):
    with pytest.raises(BagError, match="bag not found"):
        bag.ImageTopicReader(tmp_path / "nope", TOPIC)
    bag.write_image_bag(tmp_path / "empty", [], extra_topics={"/other": "std_msgs/msg/String"})
    with pytest.raises(BagError, match="the bag is empty"):
        bag.ImageTopicReader(tmp_path / "empty", TOPIC)
    bag.write_image_bag(tmp_path / "b", frames[:2], storage="mcap", extra_topics={"/other": "std_msgs/msg/String"})
    with pytest.raises(BagError, match=r"no topic '/cam'; topics present: /camera/image_raw \(sensor_msgs/msg/Image, "
                                       r"2 msgs\), /other \(std_msgs/msg/String, 0 msgs\)"):
        bag.ImageTopicReader(tmp_path / "b", "/cam")
    with pytest.raises(BagError, match="topic '/other' is std_msgs/msg/String; expected sensor_msgs/msg/Image"):
        bag.ImageTopicReader(tmp_path / "b", "/other")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("not: a bag\n")
    with pytest.raises(BagError, match="not a readable rosbag2"):
        bag.ImageTopicReader(tmp_path / "junk", TOPIC)


def test_size_change_and_out_of_order_stamps_are_per_frame_records(tmp_path, frames):
    small = make_clip(1, 32, 48, 1)[0][0]
    clip = [frames[0], frames[1], small, frames[3]]
    stamps = [100, 300, 400, 200]          # the last header stamp goes backwards
    bag.write_image_bag(tmp_path / "b", clip, stamps_ns=stamps)
    got = list(bag.ImageTopicReader(tmp_path / "b", TOPIC))
    assert [f.error is None for f in got] == [True, True, False, True]
    assert "frame size changed mid-bag: 32x48, the stream started at 40x64" in got[2].error
    assert [f.out_of_order for f in got] == [False, False, False, True]
    np.testing.assert_array_equal(got[3].image, frames[3])


@pytest.mark.parametrize("storage", bag.STORAGES)
def test_writer_leaves_a_complete_bag_when_stopped_by_an_error(tmp_path, frames, storage):
    labels = np.zeros((40, 64), np.int64)
    labels[5:9, 10:20] = 1
    bag.write_image_bag(tmp_path / "in", frames, storage=storage)
    headers = [f.header for f in bag.ImageTopicReader(tmp_path / "in", TOPIC)]
    with pytest.raises(KeyboardInterrupt):
        with bag.ResultBagWriter(tmp_path / "out", storage=storage) as writer:
            for i, hdr in enumerate(headers):
                if i == 3:
                    raise KeyboardInterrupt      # Ctrl-C in the middle of a replay
                writer.write_result(1000 + i, hdr, labels, [])
                writer.write_timing(1000 + i, {"seq": i})
    masks = bag.read_topic(tmp_path / "out", "/s3rt/mask")
    assert len(masks) == 3 and len(bag.read_topic(tmp_path / "out", "/s3rt/timing")) == 3
    assert [m.header.stamp.nanosec for _, m in masks] == [h.stamp.nanosec for h in headers[:3]]
    np.testing.assert_array_equal(masks[0][1].data.reshape(40, 64), labels)
    assert (tmp_path / "out" / "metadata.yaml").is_file()
    with pytest.raises(BagError, match="exists already"):
        bag.ResultBagWriter(tmp_path / "out")


@pytest.mark.parametrize("storage", bag.STORAGES)
def test_output_bag_metadata_like_rosbag2(tmp_path, frames, storage):
    """Issue 23 item 6: a real ros_distro (metadata.yaml, the storage's own copy, sqlite's schema
    table) and each topic's offered QoS (reliable, volatile, keep last 10), which readers parse;
    metadata.yaml exists as soon as the bag is open."""
    import sqlite3

    from rosbags.interfaces import QosDurability, QosHistory, QosReliability
    from rosbags.rosbag2 import Reader
    from ruamel.yaml import YAML

    bag.write_image_bag(tmp_path / "in", frames[:2], storage=storage)
    hdr = next(iter(bag.ImageTopicReader(tmp_path / "in", TOPIC))).header
    with bag.ResultBagWriter(tmp_path / "out", storage=storage) as writer:
        early = YAML(typ="safe").load((tmp_path / "out" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert early["message_count"] == 0 and len(early["topics_with_message_count"]) == 3
        writer.write_result(1000, hdr, np.ones((40, 64), np.int64), [])
    info = YAML(typ="safe").load((tmp_path / "out" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["ros_distro"] == "humble" and info["message_count"] == 2
    for topic in info["topics_with_message_count"]:
        (qos,) = topic["topic_metadata"]["offered_qos_profiles"]
        assert (qos["reliability"], qos["durability"], qos["history"], qos["depth"]) == \
            ("reliable", "volatile", "keep_last", 10)
    with Reader(tmp_path / "out") as reader:
        for conn in reader.connections:
            (qos,) = conn.ext.offered_qos_profiles
            assert (qos.reliability, qos.durability, qos.history) == \
                (QosReliability.RELIABLE, QosDurability.VOLATILE, QosHistory.KEEP_LAST)
    storage_file = next(f for f in (tmp_path / "out").iterdir() if f.suffix in (".db3", ".mcap"))
    if storage == "sqlite3":
        with sqlite3.connect(storage_file) as db:
            assert db.execute("SELECT ros_distro FROM schema").fetchone() == ("humble",)
            assert "ros_distro: humble" in db.execute("SELECT metadata FROM metadata").fetchone()[0]
    else:
        assert b"ros_distro: humble" in storage_file.read_bytes() and b"rosbags\n" not in storage_file.read_bytes()


@pytest.mark.parametrize("storage", bag.STORAGES)
def test_bag_folder_without_metadata_opens_from_its_storage_file(tmp_path, frames, storage):
    """Issue 22: a folder holding only an .mcap (or .db3) file opens, frames exact; a folder with
    none or several storage files is a one-line BagError."""
    bag.write_image_bag(tmp_path / "in", frames, storage=storage)
    (tmp_path / "in" / "metadata.yaml").unlink()
    with bag.ImageTopicReader(tmp_path / "in", TOPIC) as reader:
        assert reader.count == len(frames) and reader.storage == storage
        for got, want in zip(reader, frames):
            np.testing.assert_array_equal(got.image, want)
    assert len(bag.read_topic(tmp_path / "in", TOPIC)) == len(frames)
    (tmp_path / "none").mkdir()
    with pytest.raises(BagError, match=r"not a rosbag2 folder \(no metadata.yaml and no .mcap or .db3 file\)"):
        bag.ImageTopicReader(tmp_path / "none", TOPIC)
    storage_file = next((tmp_path / "in").iterdir())
    (tmp_path / "in" / f"copy{storage_file.suffix}").write_bytes(storage_file.read_bytes())
    with pytest.raises(BagError, match="no metadata.yaml and 2 storage files"):
        bag.ImageTopicReader(tmp_path / "in", TOPIC)


def test_truncated_mcap_opens_with_its_complete_messages(tmp_path, caplog):
    """Issue 22: an .mcap cut mid-file (writer killed: no summary, no footer) opens with the messages
    of its complete chunks, frames exact, and one warning saying how many were recovered; cut
    inside the first chunk (no complete channel record) it is the one-line BagError."""
    big = make_clip(4, 240, 320, 2, seed=3)[0] * 5       # 20 frames of 230 KB: rosbags closes a chunk every 5
    bag.write_image_bag(tmp_path / "in", big, storage="mcap")
    mcap_file = tmp_path / "in" / "in.mcap"
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: int(len(data) * 0.6)])   # inside the third chunk: two chunks = 10 frames whole
    with caplog.at_level("WARNING", logger=bag.__name__):
        with bag.ImageTopicReader(tmp_path / "in", TOPIC) as reader:
            assert reader.count == 10 and reader.storage == "mcap" and reader.rate_hz == pytest.approx(30.0)
            got = list(reader)
    assert [f.seq for f in got] == list(range(10)) and all(f.error is None for f in got)
    for f, want in zip(got, big):
        np.testing.assert_array_equal(f.image, want)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "is truncated" in warnings[0] and "recovered 10 complete messages" in warnings[0]
    (tmp_path / "in" / "metadata.yaml").unlink()                            # the bare file reads the same
    assert [m.header.stamp for _, m in bag.read_topic(mcap_file, TOPIC)] == [f.header.stamp for f in got]
    mcap_file.write_bytes(data[:-12])                                       # cut in the footer: all 20
    with caplog.at_level("WARNING", logger=bag.__name__):
        assert len(bag.read_topic(mcap_file, TOPIC)) == len(big)
    assert "recovered 20 complete messages" in caplog.records[-1].getMessage()
    mcap_file.write_bytes(data[:4000])
    with pytest.raises(BagError, match=r"in.mcap: not a readable rosbag2 folder \(File end magic is invalid.\)"):
        bag.ImageTopicReader(mcap_file, TOPIC)
