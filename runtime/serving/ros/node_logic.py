"""What the s3rt ROS 2 node does, as a plain class (no rclpy): images in, messages out, services.

``SegmentationNodeLogic`` converts an incoming Image/CompressedImage, hands it to the session
(live: the real-time policy, latest frame wins; ``sync=True``: processed at once, for tests and
offline use) and turns each outcome into the messages to publish — ``mask`` (label image, input
header copied), ``detections`` (Detection2DArray) and ``timing`` (JSON) — built with a
``MessageKit`` (rclpy classes in the node, rosbags classes in tests). The services
add_objects / remove_object / reset are methods returning the reply fields. The rclpy layer
(``s3rt.runtime.serving.ros.node``) only wires topics, services and parameters to these methods.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from s3rt.errors import RosMessageError, S3rtError
from s3rt.runtime.serving.ros import convert, messages
from s3rt.runtime.serving.ros.outcome import Outcome, Session

log = logging.getLogger(__name__)

MAX_PENDING_HEADERS = 16      # in-flight frames whose header we keep (latest-wins keeps it to 1-2)


@dataclass(frozen=True)
class NodeParams:
    """The node's ROS parameters (declared with these names and defaults)."""

    model_dir: str = ""
    backend: str = "onnxruntime"
    device: str = "cpu"
    threads: int = 0                  # ONNX Runtime intra-op threads, 0 = all cores
    max_objects: int = 8
    deadline_ms: float = 0.0          # 0 = no deadline (latest-frame-wins only)
    qos_depth: int = 1                # image subscription depth (sensor-data QoS)
    qos_reliability: str = "best_effort"
    mask_encoding: str = "auto"       # auto (mono8, mono16 past label 255), mono8, mono16

    def check(self) -> "NodeParams":
        """Self, when every value is usable (else an S3rtError naming the parameter)."""
        if not self.model_dir:
            raise S3rtError("parameter model_dir is required: a folder written by 's3rt export'")
        if self.qos_depth < 1:
            raise S3rtError(f"qos_depth must be >= 1, got {self.qos_depth}")
        if self.qos_reliability not in ("best_effort", "reliable"):
            raise S3rtError(f"qos_reliability must be best_effort or reliable, got '{self.qos_reliability}'")
        if self.mask_encoding not in ("auto", "mono8", "mono16"):
            raise S3rtError(f"mask_encoding must be auto, mono8 or mono16, got '{self.mask_encoding}'")
        if self.max_objects < 1 or self.deadline_ms < 0:
            raise S3rtError(f"max_objects must be >= 1 and deadline_ms >= 0, got {self.max_objects}, "
                            f"{self.deadline_ms}")
        return self


# name -> (what `ros2 param describe` shows, whether it can change while the node runs)
PARAMETERS: dict[str, tuple[str, bool]] = {
    "model_dir": ("folder written by 's3rt export' (manifest.json + graphs)", False),
    "backend": ("inference backend: onnxruntime, tensorrt or torch", False),
    "device": ("device of the backend: cpu, cuda or cuda:N", False),
    "threads": ("ONNX Runtime intra-op threads, 0 = all cores", False),
    "max_objects": ("most objects tracked at once (sizes the model's memory)", False),
    "deadline_ms": ("a frame older than this when the model is free is dropped (reported in timing); "
                    "0 = no deadline, latest frame wins only", True),
    "qos_depth": ("history depth of the image subscriptions (1 = latest frame wins); "
                  "a change re-creates the subscriptions", True),
    "qos_reliability": ("reliability of the image subscriptions: best_effort (sensor data) or reliable; "
                        "a change re-creates the subscriptions", True),
    "mask_encoding": ("encoding of published masks: auto (mono8, mono16 past label 255), mono8 or mono16", True),
}
STALE_PENDING_S = 10.0        # frames without an outcome this long are forgotten (never poll forever)


@dataclass
class Reply:
    success: bool
    message: str
    ids: list[str]
    labels: list[int]


class SegmentationNodeLogic:
    """One camera's node logic over one session."""

    def __init__(self, session: Session, kit: messages.MessageKit, params: NodeParams, *, sync: bool = False) -> None:
        self.session, self.kit, self.params, self.sync = session, kit, params, sync
        self._seq = 0
        self._headers: OrderedDict[int, Any] = OrderedDict()   # seq -> input header, until its outcome
        self._hw: tuple[int, int] | None = None
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "errors": 0, "no_objects": 0}
        self._pending: dict[int, float] = {}     # seq -> monotonic submit time, until its outcome comes

    @property
    def pending(self) -> int:
        """Frames handed to the session whose outcome has not come yet (stale ones forgotten)."""
        if self._pending:
            too_old = time.monotonic() - STALE_PENDING_S
            for seq in [s for s, t in self._pending.items() if t < too_old]:
                del self._pending[seq]
        return len(self._pending)

    # -- topics ----------------------------------------------------------------------------------
    def on_image(self, msg: Any, *, compressed: bool = False) -> list[tuple[str, Any]]:
        """Take one camera message; returns (publisher key, message) pairs ready now."""
        self.counts["received"] += 1
        seq, self._seq = self._seq, self._seq + 1
        try:
            rgb = convert.compressed_to_rgb(msg) if compressed else convert.image_to_rgb(msg)
        except RosMessageError as exc:
            self.counts["errors"] += 1
            return [("timing", self._timing(msg.header, seq, "error", error=str(exc)))]
        self._hw = rgb.shape[:2]
        if not self.session.objects:                    # nothing to track yet: reported, as gRPC reports it
            self.counts["no_objects"] += 1
            return [("timing", self._timing(msg.header, seq, "no_objects",
                                            reason="no objects tracked yet: call add_objects"))]
        stamp = convert.stamp_ns(msg.header.stamp)
        self._headers[seq] = msg.header
        while len(self._headers) > MAX_PENDING_HEADERS:
            self._headers.popitem(last=False)
        if self.sync:
            return self._publish(self.session.process(rgb, seq, stamp))
        self.session.submit(rgb, seq, stamp)
        self._pending[seq] = time.monotonic()
        return self.drain()

    def drain(self, timeout_s: float = 0.0) -> list[tuple[str, Any]]:
        """Messages for every outcome the session has ready (called by the node's timer)."""
        out: list[tuple[str, Any]] = []
        for outcome in self.session.poll(timeout_s):
            out += self._publish(outcome)
        return out

    def _publish(self, o: Outcome) -> list[tuple[str, Any]]:
        self._pending.pop(o.seq, None)
        hdr = self._headers.pop(o.seq, None)
        if hdr is None:
            hdr = messages.header(self.kit, o.capture_ns, "")
        if o.error is not None:
            self.counts["errors"] += 1
            return [("timing", self._timing(hdr, o.seq, "error", error=o.error))]
        if o.dropped is not None:
            self.counts["dropped"] += 1
            return [("timing", self._timing(hdr, o.seq, "dropped", reason=o.dropped, queue_ms=o.queue_ms))]
        assert o.labels is not None
        self.counts["processed"] += 1
        out_hdr = messages.copy_header(self.kit, hdr)
        enc = None if self.params.mask_encoding == "auto" else self.params.mask_encoding
        boxes = convert.object_boxes(o.labels, o.ids, o.scores)
        return [("mask", messages.image(self.kit, out_hdr, convert.label_image(o.labels, encoding=enc))),
                ("detections", messages.detections(self.kit, out_hdr, boxes)),
                ("timing", self._timing(hdr, o.seq, "ok", queue_ms=o.queue_ms, inference_ms=o.inference_ms,
                                        e2e_ms=o.e2e_ms, objects_visible=[b.object_id for b in boxes]))]

    def _timing(self, hdr: Any, seq: int, status: str, **extra: Any) -> Any:
        record = {"seq": seq, "stamp_ns": convert.stamp_ns(hdr.stamp), "frame_id": str(hdr.frame_id),
                  "status": status, "drops_total": self.counts["dropped"], "wall_ns": time.time_ns(), **extra}
        return messages.string(self.kit, convert.timing_json(record))

    # -- services --------------------------------------------------------------------------------
    def add_objects(self, ids: Sequence[str], masks: Sequence[Any] = (), boxes: Sequence[float] = ()) -> Reply:
        """ids + one mono8 mask Image each (nonzero = object), or + 4 box numbers each."""
        try:
            ids = [str(i) for i in ids]
            if not ids or len(set(ids)) != len(ids) or any(not i for i in ids):
                raise S3rtError(f"ids must be non-empty, unique strings, got {ids}")
            if masks and len(boxes):
                raise S3rtError("give masks or boxes, not both")
            if masks:
                if len(masks) != len(ids):
                    raise S3rtError(f"{len(ids)} ids but {len(masks)} masks")
                planes = {i: convert.decode_image(m)[..., 0] != 0 for i, m in zip(ids, masks)}
            elif len(boxes):
                if len(boxes) != 4 * len(ids):
                    raise S3rtError(f"{len(ids)} ids need {4 * len(ids)} box numbers (x0 y0 x1 y1 each), "
                                    f"got {len(boxes)}")
                if self._hw is None:
                    raise S3rtError("box prompts need the frame size: no image received yet")
                planes = {i: convert.box_mask(self._hw, tuple(boxes[4 * k:4 * k + 4])) for k, i in enumerate(ids)}
            else:
                raise S3rtError("add_objects needs masks or boxes for the ids")
            if self._hw is not None and any(p.shape != self._hw for p in planes.values()):
                raise S3rtError(f"masks must be {self._hw[0]}x{self._hw[1]} like the camera's frames, got "
                                f"{sorted({p.shape for p in planes.values()})}")
            tracked = self.session.objects
            if len(set(tracked) | set(ids)) > self.params.max_objects:
                raise S3rtError(f"max_objects={self.params.max_objects} would be exceeded "
                                f"(tracking {sorted(tracked)})")
            given = self.session.add_objects(planes)
        except S3rtError as exc:
            return Reply(False, str(exc), [], [])
        return Reply(True, f"objects {ids} are given with the next frame", list(given), [given[i] for i in given])

    def remove_object(self, object_id: str) -> Reply:
        label = self.session.objects.get(str(object_id), 0)
        try:
            self.session.remove_object(str(object_id))
        except S3rtError as exc:
            return Reply(False, str(exc), [], [])
        return Reply(True, f"removed '{object_id}' (label {label})", [str(object_id)], [label])

    def reset(self) -> Reply:
        self.session.reset()
        self._headers.clear()
        self._pending.clear()
        return Reply(True, "reset: every object forgotten", [], [])

    @property
    def objects(self) -> dict[str, int]:
        return self.session.objects


def mask_from_labels(labels: np.ndarray, label: int) -> np.ndarray:
    """(H, W) uint8 0/255 mask of one label (for clients building add_objects requests)."""
    return np.where(labels == label, 255, 0).astype(np.uint8)
