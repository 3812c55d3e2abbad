"""The transport-free serving core: ids, errors, drop policy, limits, exactness vs the tracker."""

from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import pytest

from s3rt_serving.serving_helpers import H, W, SlowBackend, make_clip
from s3rt.errors import CapacityError, ObjectIdError, ShapeError, StateError, StreamClosedError
from s3rt.runtime.serving import (ControlReply, Dropped, DropReason, FrameFailed, Result, ServingLimits,
                                  SessionManager, StreamOptions, StreamSession, tracker_factory)
from s3rt.runtime.tracker import Tracker


def sync_session(backend, **opts) -> StreamSession:
    return StreamSession(Tracker(backend, max_short_side=None), StreamOptions.every_frame(**opts), threaded=False)


def test_sync_session_equals_offline_tracker_pixel_for_pixel(backend):
    frames, mask = make_clip(12)
    offline = Tracker(backend, max_short_side=None)
    want = [offline.step(frames[0], mask=mask).index_mask] + [offline.step(f).index_mask for f in frames[1:]]
    s = sync_session(backend)
    reply = s.add_objects(mask, frames[0], ids={1: "cup", 2: 7}, seq=0, capture_ts=1.0)
    assert reply.ok and reply.labels == {"cup": 1, 7: 2}
    got = [reply.result] + [s.process(f, seq=i, capture_ts=1.0 + i) for i, f in enumerate(frames[1:], 1)]
    for i, (r, w) in enumerate(zip(got, want)):
        assert isinstance(r, Result) and r.seq == i and r.labels.dtype == np.uint8
        np.testing.assert_array_equal(r.labels, w)
        for o in r.objects:
            hit = np.argwhere(w == o.label)
            assert o.area == len(hit)
            if o.area:
                assert o.box == (hit[:, 1].min(), hit[:, 0].min(), hit[:, 1].max() + 1, hit[:, 0].max() + 1)
    assert s.counters.received == 12 and s.counters.processed == 12 and s.counters.dropped_total == 0
    assert {o.id for o in got[-1].objects} == {"cup", 7}
    assert got[1].timing.inference_ms > 0 and got[1].timing.queue_ms >= 0


def test_refused_controls_leave_state_unchanged(backend):
    frames, mask = make_clip(4)
    s = sync_session(backend)
    s.add_objects(mask, frames[0], ids={1: "a", 2: "b"}, seq=0)
    tracker = s._tracker
    before = (s.objects.labels, tracker.object_ids, tracker.frame_index, tracker.bucket_count)
    cases = [
        (ObjectIdError, "already tracked", lambda: s.add_objects(mask, frames[1], ids={1: "a", 2: "c"})),
        (ObjectIdError, "duplicate", lambda: s.add_objects(mask, frames[1], ids={1: "x", 2: "x"})),
        (ObjectIdError, "empty mask", lambda: s.add_objects(np.where(mask == 1, 1, 0), frames[1], ids={1: "x", 2: "y"})),
        (ObjectIdError, "no object pixels", lambda: s.add_objects(np.zeros((H, W), np.int64), frames[1])),
        (ObjectIdError, "no object id", lambda: s.add_objects(mask, frames[1], ids={1: "x"})),
        (ObjectIdError, "unknown object ids", lambda: s.update_objects(mask, frames[1], ids={1: "a", 2: "zz"})),
        (ObjectIdError, "unknown object ids", lambda: s.remove_objects(["nope"])),
        (ObjectIdError, "strings or ints", lambda: s.remove_objects([1.5])),
        (ShapeError, "but its frame is", lambda: s.add_objects(mask[:32], frames[1], ids={1: "x", 2: "y"})),
        (ShapeError, "uint8 RGB", lambda: s.add_objects(mask, frames[1].astype(np.float32), ids={1: "x", 2: "y"})),
    ]
    for err, text, call in cases:
        with pytest.raises(err, match=text):
            call()
        assert (s.objects.labels, tracker.object_ids, tracker.frame_index, tracker.bucket_count) == before, text
    # too many objects for the stream: 4 max, 2 tracked, adding 3
    three = np.zeros((H, W), np.int64)
    three[0:5, 0:5], three[10:15, 0:5], three[20:25, 0:5] = 1, 2, 3
    with pytest.raises(CapacityError, match="exceed"):
        s.add_objects(three, frames[1], ids={1: "p", 2: "q", 3: "r"})
    assert (s.objects.labels, tracker.object_ids, tracker.frame_index) == before[:3]


def test_remove_readd_reset_and_closed_stream(backend):
    frames, mask = make_clip(6)
    s = sync_session(backend)
    s.add_objects(mask, frames[0], ids={1: "a", 2: "b"})
    assert s.remove_objects(["a"]).labels == {"b": 2}
    r = s.process(frames[1], seq=1)
    assert isinstance(r, Result) and set(np.unique(r.labels)) <= {0, 2} and [o.id for o in r.objects] == ["b"]
    reply = s.add_objects(np.where(mask == 1, 5, 0), frames[2], ids={5: "c"}, seq=2)
    assert reply.labels == {"b": 2, "c": 1}              # the freed label is reused
    assert s.update_objects(np.where(mask == 1, 1, 0), frames[3], ids={1: "c"}, seq=3).ok
    assert s.reset().labels == {} and s._tracker.object_ids == []
    out = s.process(frames[4], seq=4)
    assert isinstance(out, Dropped) and out.reason is DropReason.NO_OBJECTS
    bad = s.process(frames[4][:, :50], seq=5)          # before any objects: no_objects wins
    s.add_objects(mask, frames[4], seq=6)
    bad = s.process(frames[5][:, :50], seq=7)
    assert isinstance(bad, FrameFailed) and bad.error == "ShapeError" and "this stream's frames" in bad.message
    assert isinstance(s.process(frames[5], seq=8), Result)      # the stream goes on
    c = s.counters
    assert c.received == c.processed + c.failed + c.dropped_total
    s.close("test over")
    for call in (lambda: s.process(frames[0], seq=9), lambda: s.add_objects(mask, frames[0]),
                 lambda: s.remove_objects(["b"]), lambda: s.reset()):
        with pytest.raises(StreamClosedError, match="test over"):
            call()
    assert s.state_bytes == 0


def collect(session: StreamSession, n: int, timeout: float = 30.0) -> list:
    outs, end = [], time.monotonic() + timeout
    while len(outs) < n and time.monotonic() < end:
        out = session.next_output(timeout=0.5)
        if out is not None:
            outs.append(out)
    return outs


def test_latest_frame_wins_and_deadline_with_a_slow_backend(backend):
    """~6 graph calls x 20 ms per frame: submitting every 5 ms must drop, never queue."""
    frames, mask = make_clip(40)
    slow = SlowBackend(backend, delay_s=0.02)
    s = StreamSession(Tracker(slow, max_short_side=None), StreamOptions(deadline_ms=60), threaded=True)
    s.add_objects(mask, frames[0], seq=0)
    assert isinstance(collect(s, 1)[0], ControlReply)
    for i in range(1, 40):
        s.submit(frames[i], seq=i)
        time.sleep(0.005)
    outs = collect(s, 39)
    s.close()
    assert sorted(o.seq for o in outs) == list(range(1, 40))            # every frame answered once
    done = [o for o in outs if isinstance(o, Result)]
    drops = [o for o in outs if isinstance(o, Dropped)]
    assert [o.seq for o in done] == sorted(o.seq for o in done)         # results in order
    assert len(done) >= 2 and drops and {d.reason for d in drops} <= {DropReason.SUPERSEDED, DropReason.DEADLINE}
    assert all(r.timing.queue_ms <= 60 for r in done)                    # nothing processed late
    c = s.counters
    assert c.received == 40 == c.processed + c.dropped_total + c.failed      # the add's frame counts too
    assert c.processed - 1 == len(done) and c.dropped[DropReason.SUPERSEDED.value] > 0


def test_deadline_drop_at_dequeue(backend):
    frames, mask = make_clip(3)
    s = StreamSession(Tracker(SlowBackend(backend, 0.03), max_short_side=None),
                      StreamOptions(deadline_ms=50, latest_frame_wins=False), threaded=True)
    s.add_objects(mask, frames[0], seq=0)
    s.submit(frames[1], seq=1)     # waits behind nothing: processed (~0.2 s)
    s.submit(frames[2], seq=2)     # waits ~0.2 s behind frame 1: older than 50 ms at dequeue
    outs = collect(s, 3)
    s.close()
    assert isinstance(outs[1], Result) and outs[1].seq == 1
    assert isinstance(outs[2], Dropped) and outs[2].reason is DropReason.DEADLINE and "deadline 50 ms" in outs[2].detail


def test_manager_limits_idle_timeout_and_freed_state(backend):
    now = [0.0]
    manager = SessionManager(tracker_factory(backend, max_short_side=None),
                             ServingLimits(max_streams=2, max_objects=2, idle_timeout_s=5), clock=lambda: now[0])
    frames, mask = make_clip(2)
    a = manager.open(StreamOptions.every_frame())
    b = manager.open(StreamOptions.every_frame())
    with pytest.raises(CapacityError, match="limit is 2"):
        manager.open()
    a.add_objects(mask, frames[0])
    b.add_objects(np.where(mask == 1, 1, 0), frames[0])
    assert a.objects.max_objects == 2 and manager.stats()["objects"] == 3
    assert manager.stats()["state_bytes"] == a.state_bytes + b.state_bytes > 0
    ref = weakref.ref(a._tracker)
    now[0] = 3.0
    b.submit(frames[1], seq=1)                   # b stays active
    now[0] = 6.0
    assert manager.reap_idle() == [a.stream_id]
    assert a.closed and "idle" in a.closed_reason and manager.stats()["streams"] == 1
    with pytest.raises(StreamClosedError, match="idle"):
        a.submit(frames[1], seq=2)
    gc.collect()
    assert ref() is None and manager.stats()["state_bytes"] == b.state_bytes
    c = manager.open()                           # the freed slot can be used again
    manager.shutdown("maintenance")
    assert b.closed_reason == "maintenance" and c.closed
    with pytest.raises(StateError, match="shutting down"):
        manager.open()


def test_serving_core_imports_without_torch_or_transports():
    import subprocess
    import sys
    code = ("import sys\n"
            "for m in ('torch', 'grpc', 'prometheus_client', 'google.protobuf'): sys.modules[m] = None\n"
            "import s3rt.runtime.serving, s3rt.runtime.serving.session, s3rt.runtime.serving.manager\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
