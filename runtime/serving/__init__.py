"""Transport-free serving core: long-lived tracker sessions with a real-time frame policy.

No gRPC, no metrics library, no torch here; transports (s3rt.runtime.serving.grpc, a ROS 2 node, ...) sit on top.

    backend = make_backend("onnxruntime", model_dir="model/")            # s3rt.runtime.backends
    manager = SessionManager(tracker_factory(backend, max_short_side=None),
                             ServingLimits(max_streams=4, max_objects=8, idle_timeout_s=60))
    manager.start_reaper()                                   # idle streams are closed, state freed
    s = manager.open(StreamOptions(deadline_ms=150))         # threaded: a worker per stream
    reply = s.add_objects(mask, frame0, ids={1: "cup", 2: 7})  # mask values -> user ids (str|int)
    reply.labels                                             # {"cup": 1, 7: 2}: label values in results
    s.submit(frame, seq=1, capture_ts=t_capture)             # never blocks (latest frame wins)
    for out in s:                                            # Result | Dropped | FrameFailed | ControlReply
        ...
    manager.close(s.stream_id)

API (stable; other adapters build on it):
- `StreamSession` (session.py): one tracker + its fixed buffers. Controls are typed (controls.py):
  `control(AddObjects(mask, ids, labels) | UpdateObjects(mask, ids) | RemoveObjects(ids) | Reset(),
  frame=, seq=, capture_ts=, request_id=)` -> Future of the `ControlReply` (raises the typed error
  on refusal; a refused op changes nothing); blocking shorthands `add_objects(mask, frame, ids=,
  labels=, ...)`, `update_objects(...)`, `remove_objects(ids)`, `reset()`. Frames: `submit(frame,
  seq, capture_ts)` -> Future of its output, `process(...)` -> the output. `threaded=False` runs
  every item on the caller's thread (executor.py: the same handler inline). `report(FrameFailed|
  ControlReply)` emits an outcome a transport decided (e.g. an undecodable frame) in order with the
  rest; `drain(timeout)` waits until everything given so far is handled. `close(reason)`;
  `counters`, `objects` (ObjectTable: `labels`, `claimed`, `reserve()` for adapters that pin labels
  before the frame), `state_bytes`, `frame_hw`, `closed_reason`, `last_active`, `policy`.
- `StreamOptions`: `deadline_ms` (None = none), `deadline_from` "receive"|"capture",
  `latest_frame_wins` (False = every frame in order with back-pressure: `StreamOptions.every_frame()`),
  `max_waiting`, `max_waiting_controls`, `max_objects`, `max_unread_results`, `max_unread_outputs`;
  `.policy` is the stream's `DropPolicy` (policy.py: supersede, backlog, deadline, reader gone).
- `SessionManager` (manager.py): `open(options, threaded=)`, `get(id)`, `close(id, reason)`,
  `reap_idle()`, `start_reaper()`, `shutdown(reason)`, `stats()`; limits in `ServingLimits`.
- messages.py: `Result(seq, capture_ts, labels (H0, W0) uint8|uint16, objects: ObjectStat(id, label,
  area, box, visible, score), timing: Timing(queue_ms, inference_ms, encode_ms), frame_index,
  memory_written, request_id)`, `Dropped(seq, capture_ts, reason: DropReason, detail,
  queue_ms)`,
  `FrameFailed(seq, capture_ts, error, message)`, `ControlReply(op, request_id, ok, labels, error,
  message, result)`.

Policy: each submitted frame yields exactly one output with its seq. Latest frame wins: one frame
in flight, at most one waiting; a newer one replaces it (SUPERSEDED). At dequeue a frame older than
the deadline is DEADLINE-dropped, never processed late; frames before any object are NO_OBJECTS;
frames waiting at close are CLOSED. Dropped frames never reach the tracker (never in memory). A
frame given with an add/update mask belongs to that control and is always processed. Errors:
ObjectIdError (unknown, duplicate, empty mask), ShapeError (frame/mask shape or dtype),
CapacityError (objects, object groups, streams), StreamClosedError (op on a closed stream).
"""

from s3rt.runtime.serving.manager import ServingLimits, SessionManager, tracker_factory
from s3rt.runtime.serving.messages import (ControlReply, Dropped, DropReason, FrameFailed, ObjectId, ObjectStat,
                                           Output, Result, Timing)
from s3rt.runtime.serving.session import StreamCounters, StreamOptions, StreamSession

__all__ = ["ControlReply", "DropReason", "Dropped", "FrameFailed", "ObjectId", "ObjectStat", "Output", "Result",
           "ServingLimits", "SessionManager", "StreamCounters", "StreamOptions", "StreamSession", "Timing",
           "tracker_factory"]
