"""Core hooks the ROS adapter uses: labels a request pins, per-object scores, how long a drop waited."""

from __future__ import annotations

import numpy as np
import pytest

from s3rt_serving.serving_helpers import SlowBackend, make_clip
from s3rt.errors import ObjectIdError
from s3rt.runtime.serving import Dropped, DropReason, Result, StreamOptions, StreamSession
from s3rt.runtime.serving.objects import ObjectTable
from s3rt.runtime.tracker import Tracker


def _sync(backend) -> StreamSession:
    return StreamSession(Tracker(backend, max_short_side=None), StreamOptions.every_frame(), threaded=False)


def test_pinned_labels_are_the_label_values_and_scores_are_mean_probabilities(backend):
    """Mask values 3 and 9 kept as labels: the images equal the tracker's own index masks."""
    frames, mask = make_clip(4)
    given = np.where(mask == 1, 3, np.where(mask == 2, 9, 0))
    offline = Tracker(backend, max_short_side=None)
    want = [offline.step(frames[0], mask=given)] + [offline.step(f) for f in frames[1:]]
    s = _sync(backend)
    reply = s.add_objects(given, frames[0], ids={3: "3", 9: "9"}, labels={"3": 3, "9": 9}, seq=0)
    assert reply.labels == {"3": 3, "9": 9}
    got = [reply.result] + [s.process(f, seq=i, capture_ts=0.0) for i, f in enumerate(frames[1:], 1)]
    for r, w in zip(got, want):
        assert isinstance(r, Result)
        np.testing.assert_array_equal(r.labels, w.index_mask)
        for o in r.objects:
            inside = w.index_mask == o.label
            assert o.area == int(inside.sum()) > 0
            expect = w.probabilities[w.object_ids.index(o.label) + 1][inside].mean()
            assert o.score == pytest.approx(float(expect), abs=1e-6)
    s.add_objects((mask == 2).astype(np.int64), frames[0], ids={1: "new"}, seq=4)
    assert s.objects.labels == {"3": 3, "9": 9, "new": 1}         # unpinned: smallest free label


@pytest.mark.parametrize("labels,match", [
    ({"a": 1}, r"requested labels are in use \(label -> id\): \{1: 'x'\}"),
    ({"a": 0}, r"requested labels must be integers 1\.\.65535, got \[0\]"),
    ({"a": 70000}, r"1\.\.65535, got \[70000\]"),
    ({"a": 4, "b": 4}, "the same label requested twice"),
    ({"zzz": 5}, r"labels requested for ids \['zzz'\] that this request does not add"),
])
def test_refused_label_requests_change_nothing(labels, match):
    table = ObjectTable(8)
    table.assign(["x"])
    with pytest.raises(ObjectIdError, match=match):
        table.check_new(["a", "b"], labels)
    assert table.labels == {"x": 1}


def test_a_dropped_frame_says_how_long_it_waited(backend):
    frames, mask = make_clip(3)
    s = StreamSession(Tracker(SlowBackend(backend, 0.03), max_short_side=None),
                      StreamOptions(deadline_ms=50, latest_frame_wins=False), threaded=True)
    s.add_objects(mask, frames[0], seq=0)
    s.submit(frames[1], seq=1)
    s.submit(frames[2], seq=2)            # waits behind frame 1 (~0.2 s): past the deadline at dequeue
    outs = []
    while len(outs) < 3:
        out = s.next_output(timeout=5)
        assert out is not None
        outs.append(out)
    s.close()
    drop = outs[2]
    assert isinstance(drop, Dropped) and drop.reason is DropReason.DEADLINE and drop.queue_ms > 50
    assert isinstance(outs[1], Result) and drop.queue_ms >= outs[1].timing.inference_ms
