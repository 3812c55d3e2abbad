"""Wire codecs: every frame/mask encoding round-trips; label images switch to mono16 above 255."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("grpc", reason="serving tests need the serve extra (grpcio)")

from s3rt.errors import InputError, ShapeError  # noqa: E402
from s3rt.runtime.serving.messages import ObjectStat, Result, Timing  # noqa: E402
from s3rt.runtime.serving.objects import label_image, object_stats  # noqa: E402
from s3rt.runtime.serving.grpc import codec  # noqa: E402


def test_frame_and_mask_encodings_round_trip():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    for enc in ("rgb8", "bgr8", "png"):
        np.testing.assert_array_equal(codec.decode_frame(codec.encode_frame(frame, enc)), frame)
    jpeg = codec.decode_frame(codec.encode_frame(frame, "jpeg", quality=95))
    assert jpeg.shape == frame.shape and jpeg.dtype == np.uint8
    grey = codec.pb.Image(data=frame[..., 0].tobytes(), height=20, width=30, encoding=codec.pb.ENCODING_MONO8)
    np.testing.assert_array_equal(codec.decode_frame(grey), np.repeat(frame[..., :1], 3, axis=2))
    mask = rng.integers(0, 3, (20, 30))
    big = mask * 1000
    for m, enc in ((mask, None), (mask, "png"), (big, None), (big, "png")):
        np.testing.assert_array_equal(codec.decode_mask(codec.encode_mask(m, enc)), m)
    assert codec.encode_mask(big).encoding == codec.pb.ENCODING_MONO16
    with pytest.raises(ShapeError, match="declared 10x30"):
        codec.decode_frame(codec.pb.Image(data=codec.encode_frame(frame, "png").data, height=10, width=30,
                                          encoding=codec.pb.ENCODING_PNG))
    with pytest.raises(InputError, match="not a mask encoding"):
        codec.decode_mask(codec.encode_frame(frame, "rgb8"))


def test_label_images_and_results_round_trip_mono8_and_mono16():
    probs = np.zeros((3, 4, 5), np.float32)
    probs[0] = 0.5
    probs[1, :2, :2] = 1
    probs[2, 3, 4] = 1
    for labels in ([1, 2], [7, 300]):
        img = label_image(probs, labels)
        assert img.dtype == (np.uint8 if max(labels) <= 255 else np.uint16)
        table = {"a": labels[0], 9: labels[1]}
        stats = object_stats(img, table)
        assert stats == (ObjectStat("a", labels[0], 4, (0, 0, 2, 2)), ObjectStat(9, labels[1], 1, (4, 3, 5, 4)))
        r = Result(seq=3, capture_ts=1.5, labels=img, objects=stats, timing=Timing(1, 2, 3), frame_index=2,
                   memory_written=True, request_id=4)
        back = codec.result_from_pb(codec.result_to_pb(r))
        np.testing.assert_array_equal(back.labels, img)
        assert back.objects == stats and back.seq == 3 and back.request_id == 4 and back.timing == r.timing
