"""Message conversion: Image/CompressedImage <-> numpy round trips, label images, boxes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt.errors import RosMessageError
from s3rt.runtime.serving.ros import convert as cv
from s3rt.runtime.serving.ros import messages as rm

pytest.importorskip("rosbags", reason="rosbags not installed (pip install 's3rt[ros]')")


@pytest.fixture(scope="module")
def kit() -> rm.RosbagsKit:
    return rm.RosbagsKit()


def _sample(encoding: str, h: int = 5, w: int = 7) -> np.ndarray:
    enc = cv.ENCODINGS[encoding]
    rng = np.random.default_rng(3)
    hi = 65536 if enc.dtype == np.uint16 else 256
    return rng.integers(0, hi, (h, w, enc.channels)).astype(enc.dtype)


def _through_cdr(kit: rm.RosbagsKit, msg):
    """Serialise and deserialise as a bag does, so the test covers the wire format too."""
    return kit.store.deserialize_cdr(kit.serialize(msg), msg.__msgtype__)


@pytest.mark.parametrize("encoding", sorted(cv.ENCODINGS))
@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("big_endian", [False, True])
def test_image_round_trip_every_encoding(kit, encoding, padding, big_endian):
    img = _sample(encoding)
    fields = cv.encode_image(img, encoding, row_padding=padding, big_endian=big_endian)
    assert fields.step == img.shape[1] * cv.ENCODINGS[encoding].pixel_bytes + padding
    msg = _through_cdr(kit, rm.image(kit, rm.header(kit, 1_500_000_007, "cam"), fields))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (1, 500_000_007, "cam")
    back = cv.decode_image(msg)
    assert back.dtype == img.dtype and back.shape == img.shape
    np.testing.assert_array_equal(back, img)


def test_mono16_byte_order_is_honoured(kit):
    img = np.array([[[0x0102]]], np.uint16)
    big = cv.encode_image(img, "mono16", big_endian=True)
    little = cv.encode_image(img, "mono16")
    assert big.data == b"\x01\x02" and little.data == b"\x02\x01" and big.is_bigendian == 1


def test_to_rgb8_channel_orders():
    rgb = _sample("rgb8")
    np.testing.assert_array_equal(cv.to_rgb8(rgb[..., ::-1], "bgr8"), rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)], axis=2)
    np.testing.assert_array_equal(cv.to_rgb8(rgba, "rgba8"), rgb)
    np.testing.assert_array_equal(cv.to_rgb8(rgba[..., [2, 1, 0, 3]], "bgra8"), rgb)
    gray = _sample("mono8")
    assert (cv.to_rgb8(gray, "mono8") == gray).all()
    g16 = _sample("mono16")
    np.testing.assert_array_equal(cv.to_rgb8(g16, "mono16")[..., 1], (g16[..., 0] >> 8).astype(np.uint8))


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_round_trip(kit, fmt):
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[4:20, 6:26] = (200, 40, 90)
    msg = _through_cdr(kit, rm.compressed_image(kit, rm.header(kit, 5, "c"), fmt, cv.encode_compressed(rgb, fmt)))
    back = cv.compressed_to_rgb(msg)
    assert back.shape == rgb.shape
    if fmt == "png":
        np.testing.assert_array_equal(back, rgb)
    else:   # lossy: mean error of a flat two-colour image stays small
        assert np.abs(back.astype(int) - rgb).mean() < 3.0


def test_compressed_format_strings_of_image_transport(kit):
    rgb = np.full((16, 16, 3), 77, np.uint8)
    msg = rm.compressed_image(kit, rm.header(kit, 0, ""), "bgr8; png compressed bgr8", cv.encode_compressed(rgb))
    np.testing.assert_array_equal(cv.compressed_to_rgb(msg), rgb)


def test_label_images_mono8_and_mono16(kit):
    labels = np.zeros((6, 8), np.int64)
    labels[1:3, 2:5] = 3
    f8 = cv.label_image(labels)
    assert f8.encoding == "mono8" and f8.step == 8
    labels[5, 7] = 300
    f16 = cv.label_image(labels)
    assert f16.encoding == "mono16" and f16.step == 16
    np.testing.assert_array_equal(cv.decode_image(_through_cdr(kit, rm.image(kit, rm.header(kit, 0, ""), f16)))[..., 0],
                                  labels)
    with pytest.raises(RosMessageError, match="does not fit a mono8"):
        cv.label_image(labels, encoding="mono8")


def test_object_boxes_and_detection_array(kit):
    labels = np.zeros((10, 12), np.int64)
    labels[2:5, 3:9] = 1          # rows 2..4, cols 3..8
    labels[7, 0] = 2
    boxes = cv.object_boxes(labels, {1: "cup", 2: "pen", 3: "gone"})
    assert [(b.object_id, b.area, b.x0, b.y0, b.x1, b.y1) for b in boxes] == [
        ("cup", 18, 3, 2, 9, 5), ("pen", 1, 0, 7, 1, 8)]
    msg = _through_cdr(kit, rm.detections(kit, rm.header(kit, 42, "cam"), boxes))
    assert [d.id for d in msg.detections] == ["cup", "pen"]
    d = msg.detections[0]
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == (6.0, 3.5, 6.0, 3.0)
    assert d.results[0].hypothesis.class_id == "cup" and d.header.stamp.nanosec == 42


def test_box_prompt_mask():
    m = cv.box_mask((10, 10), (2, 3, 5, 9))
    assert m.sum() == 3 * 6 and m[3, 2] and not m[9, 5]
    with pytest.raises(RosMessageError, match="empty"):
        cv.box_mask((10, 10), (12, 0, 15, 5))


class _Msg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_bad_images_are_refused_with_reasons():
    good = cv.encode_image(_sample("rgb8"), "rgb8")
    with pytest.raises(RosMessageError, match=r"unsupported image encoding 'yuv422'.*rgb8"):
        cv.decode_image(_Msg(**{**good.__dict__, "encoding": "yuv422"}))
    with pytest.raises(RosMessageError, match=r"step 20 is smaller than width x bytes per pixel = 7 x 3 = 21"):
        cv.decode_image(_Msg(**{**good.__dict__, "step": 20}))
    with pytest.raises(RosMessageError, match=r"data has 100 bytes, expected step x height = 105 \(truncated"):
        cv.decode_image(_Msg(**{**good.__dict__, "data": good.data[:100]}))
    with pytest.raises(RosMessageError, match="must be positive"):
        cv.decode_image(_Msg(**{**good.__dict__, "height": 0}))
    with pytest.raises(RosMessageError, match="needs an"):
        cv.encode_image(np.zeros((4, 4, 3), np.uint16), "rgb8")
    with pytest.raises(RosMessageError, match="unsupported CompressedImage format 'tiff'"):
        cv.compressed_to_rgb(_Msg(format="tiff", data=b"xx"))
    with pytest.raises(RosMessageError, match="undecodable"):
        cv.compressed_to_rgb(_Msg(format="jpeg", data=np.frombuffer(b"not a jpeg", np.uint8)))


def test_timing_json_is_compact_and_sorted():
    assert cv.timing_json({"seq": 3, "e2e_ms": 1.23456, "dropped": False}) == \
        '{"dropped":false,"e2e_ms":1.235,"seq":3}'
