"""A client that stops reading its results cannot make a stream's memory grow (module docstring of
runtime/serving/session.py): latest-frame-wins streams drop with reason "backlog", then close;
every-frame streams push back on the sender."""

from __future__ import annotations

import threading
import time

import pytest

from s3rt_serving.serving_helpers import make_clip
from s3rt.errors import ConfigError
from s3rt.runtime.serving import Dropped, DropReason, Result, StreamOptions, StreamSession
from s3rt.runtime.tracker import Tracker


def _session(backend, options: StreamOptions) -> tuple[StreamSession, list]:
    frames, mask = make_clip(40)
    s = StreamSession(Tracker(backend, max_short_side=None), options, threaded=True)
    assert s.add_objects(mask, frames[0], ids={1: "a", 2: "b"}, seq=0).ok
    return s, frames


def _outputs(s: StreamSession) -> list:
    out = []
    while (o := s.next_output(timeout=0.2)) is not None:
        out.append(o)
    return out


def test_unread_results_make_live_frames_drop_as_backlog(backend):
    s, frames = _session(backend, StreamOptions(deadline_ms=None, max_unread_results=3, max_unread_outputs=None))
    for i, f in enumerate(frames[1:25], 1):
        s.submit(f, seq=i)
        assert s.drain(timeout=60)                 # every frame reaches the worker (none superseded)
    outs = _outputs(s)
    results = [o for o in outs if isinstance(o, Result)]
    backlog = [o for o in outs if isinstance(o, Dropped) and o.reason is DropReason.BACKLOG]
    # the add's reply carries frame 0's result and counts as unread: two frames are processed, then the
    # client is 3 results behind and the rest are not computed
    assert [r.seq for r in results] == [1, 2]
    assert [d.seq for d in backlog] == list(range(3, 25)) and "3 results not read by the client" in backlog[0].detail
    assert s.counters.dropped["backlog"] == 22 and s.counters.processed == 1 + 2
    s.submit(frames[30], seq=30)                   # the client has read everything: processed again
    assert s.drain(timeout=60)
    assert isinstance(s.next_output(timeout=5), Result)
    s.close()


def test_a_client_that_never_reads_gets_its_stream_closed(backend):
    s, frames = _session(backend, StreamOptions(deadline_ms=None, max_unread_results=2, max_unread_outputs=8))
    for i, f in enumerate(frames[1:20], 1):
        if s.closed:
            break
        s.submit(f, seq=i)
        s.drain(timeout=60)
    assert s.closed and "stopped reading" in s.closed_reason
    assert len(_outputs(s)) <= 8 + 2               # bounded: the limit, plus what closing reported


def test_every_frame_stream_waits_for_the_reader_instead_of_dropping(backend):
    s, frames = _session(backend, StreamOptions.every_frame(max_unread_results=2, max_waiting=2))
    sent = []

    def sender():
        for i, f in enumerate(frames[1:12], 1):
            s.submit(f, seq=i)                     # blocks once the worker waits and the inbox is full
            sent.append(i)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    time.sleep(1.5)
    assert len(sent) < 11                          # back-pressure: the sender is held up
    got = []
    while len(got) < 12:                           # the add's reply + 11 results, in order
        o = s.next_output(timeout=30)
        assert o is not None
        got.append(o)
    t.join(timeout=30)
    assert len(sent) == 11
    assert [o.seq for o in got[1:]] == list(range(1, 12)) and all(isinstance(o, Result) for o in got[1:])
    assert s.counters.dropped_total == 0
    s.close()


def test_bad_limits():
    with pytest.raises(ConfigError, match="max_unread_results must be >= 1"):
        StreamOptions(max_unread_results=0)
