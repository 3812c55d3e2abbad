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
