"""`CoreSession`: the ROS `Session` over the serving core (the gRPC path), offline and real time."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

import ros_helpers  # noqa: E402
from ros_helpers import H, W  # noqa: E402
from s3rt_serving.serving_helpers import SlowBackend  # noqa: E402
from s3rt.errors import CapacityError, ObjectIdError, ShapeError, StateError  # noqa: E402
from s3rt.runtime.backends import make_backend  # noqa: E402
from s3rt.runtime.serving.ros.core_session import CoreSession  # noqa: E402
from s3rt.runtime.serving import DropReason  # noqa: E402
from s3rt.runtime.tracker import Tracker  # noqa: E402

STAMP0 = 1_733_300_000_123_456_789          # a 19-digit ROS stamp: more digits than a float second holds


@pytest.fixture(scope="module")
def backend(ros_tiny_model):
    b = make_backend("onnxruntime", model_dir=ros_tiny_model, threads=1)
    b.open()
    yield b
    b.close()


def _poll_all(session: CoreSession, n: int, timeout_s: float = 20.0) -> list:
    out: list = []
    until = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < until:
        out += session.poll(timeout_s=0.05)
    return out


def test_offline_masks_equal_the_tracker_with_index_values_as_labels(backend):
    """Mask values 2 and 5 stay the labels (id "2", "5"); stamps come back to the nanosecond."""
    frames, masks = ros_helpers.clip()
    given = np.where(masks[0] == 1, 2, np.where(masks[0] == 2, 5, 0))
    ref = Tracker(backend, None)
    want = [ref.step(frames[0], mask=given)] + [ref.step(f) for f in frames[1:]]
    s = CoreSession.open(Tracker(backend, None))
    assert s.add_index_mask(given) == {"2": 2, "5": 5} and s.objects == {"2": 2, "5": 5}
    for i, (f, w) in enumerate(zip(frames, want)):
        o = s.process(f, i, STAMP0 + i)
        assert o.processed and (o.seq, o.capture_ns) == (i, STAMP0 + i)
        np.testing.assert_array_equal(o.labels, w.index_mask)                 # pixel for pixel
        assert o.ids == {2: "2", 5: "5"} and o.inference_ms > 0 and o.e2e_ms >= o.inference_ms
        for label, score in o.scores.items():
            inside = w.index_mask == label
            assert score == pytest.approx(float(w.probabilities[w.object_ids.index(label) + 1][inside].mean()),
                                          abs=1e-6)
    with pytest.raises(StateError, match="needs a real-time session"):
        s.submit(frames[0], 99, 0)
    assert s.poll() == []
    s.close()


def test_held_masks_are_checked_when_given_and_a_refusal_changes_nothing(backend):
    frames, masks = ros_helpers.clip()
    s = CoreSession.open(Tracker(backend, None), max_objects=3)
    cup, pen = masks[0] == 1, masks[0] == 2
    assert s.add_objects({"cup": cup}) == {"cup": 1}
    assert s.add_objects({"pen": pen}) == {"pen": 2}          # merged with the held masks: one add
    cases = [(lambda: s.add_index_mask(masks[0]), ObjectIdError, r"requested labels are in use \(label -> id\): \{1: .cup., 2: .pen.\}"),
             (lambda: s.add_objects({"a": cup, "b": pen}), CapacityError, "limit of 3"),
             (lambda: s.add_objects({"big": np.ones((H, W), bool)}), ObjectIdError,
              r"empty masks for objects \['cup', 'pen'\]"),
             (lambda: s.add_objects({"x": np.ones((8, 8), bool)}), ShapeError, "wait for the next frame"),
             (lambda: s.add_objects({}), ObjectIdError, "no objects given")]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
        assert s.objects == {"cup": 1, "pen": 2}
    o = s.process(frames[0], 0, 0)
    assert o.processed and set(np.unique(o.labels)) == {0, 1, 2}
    with pytest.raises(ObjectIdError, match=r"\['cup'\] are tracked and \['new'\] are new"):
        s.add_objects({"cup": cup, "new": pen})
    with pytest.raises(ShapeError, match=f"must be {H}x{W} like the stream's frames"):
        s.add_objects({"x": np.ones((8, 8), bool)})
    assert s.add_objects({"cup": pen}) == {"cup": 1}           # tracked id: re-given (the core's update)
    o = s.process(frames[1], 1, 0)
    assert o.processed and s.objects == {"cup": 1, "pen": 2}
    s.add_objects({"later": cup})
    s.remove_object("later")                                    # still held: taken out, nothing sent
    s.remove_object("pen")
    with pytest.raises(ObjectIdError, match=r"unknown object ids \['pen'\]"):
        s.remove_object("pen")
    assert s.objects == {"cup": 1}
    s.reset()
    o = s.process(frames[2], 2, 7)
    assert o.dropped == DropReason.NO_OBJECTS.value and o.capture_ns == 7 and s.objects == {}
    s.close()


def test_realtime_policy_is_the_cores(backend):
    """A burst into a slow model: the core's latest-frame-wins drops (its DropReason values), every
    frame answered once, and a frame carrying new masks is never dropped."""
    frames, masks = ros_helpers.clip()
    s = CoreSession.open(Tracker(SlowBackend(backend, 0.01), None), realtime=True)
    try:
        with pytest.raises(StateError, match="runs only a frame that carries new masks"):
            s.process(frames[0], 0, 0)
        s.add_objects({"cup": masks[0] == 1})
        first = s.process(frames[0], 0, STAMP0)                 # the prompted frame: waited for
        assert first.processed and first.ids == {1: "cup"} and first.capture_ns == STAMP0
        for i in range(1, 31):
            if i == 15:
                assert s.add_objects({"pen": masks[0] == 2}) == {"pen": 2}
                s.submit(frames[0], i, STAMP0 + i)              # carries the pen's mask
            else:
                s.submit(frames[i % len(frames)], i, STAMP0 + i)
        got = _poll_all(s, 30)
        assert sorted(o.seq for o in got) == list(range(1, 31))
        assert all(o.capture_ns == STAMP0 + o.seq for o in got)
        dropped = [o for o in got if o.dropped]
        assert dropped and {o.dropped for o in dropped} <= {r.value for r in DropReason}
        assert {o.dropped for o in dropped} == {DropReason.SUPERSEDED.value}
        by_seq = {o.seq: o for o in got}
        assert by_seq[15].processed and by_seq[15].ids == {1: "cup", 2: "pen"}
        assert s.objects == {"cup": 1, "pen": 2}
        s.add_objects({"x": masks[0] == 1})
        s.submit(np.zeros((H // 2, W, 3), np.uint8), 31, 0)     # wrong size: the add is refused, with its frame
        (bad,) = _poll_all(s, 1)
        assert bad.seq == 31 and "refused" in bad.error and s.objects == {"cup": 1, "pen": 2}
    finally:
        s.close()
