"""Building ROS messages for two worlds: rosbags' typestore (bags, no ROS) and rclpy (a live node).

A ``MessageKit`` knows how to make a message of a type name and how its array fields are held
(rosbags: numpy arrays; rclpy: ``array.array('B')`` for uint8[], numpy for fixed float arrays).
The builders below fill every field, so one builder serves both kits. ``typestore()`` returns the
rosbags type store used for bags, with vision_msgs registered when the distribution's store lacks
it (the definitions below are the vision_msgs 4.x ones used by Humble and later).
"""

from __future__ import annotations

import array
import functools
import importlib
import logging
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from s3rt.runtime.serving.ros.convert import ImageFields, ObjectBox, split_ns

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
DETECTIONS = "vision_msgs/msg/Detection2DArray"
STRING = "std_msgs/msg/String"

# vision_msgs 4.x (ROS 2 Humble+), field for field
VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D":
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n",
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


class MessageKit(Protocol):
    def new(self, typename: str, **fields: Any) -> Any: ...
    def u8(self, data: bytes) -> Any: ...
    def f64(self, values: Iterable[float], n: int) -> Any: ...


@functools.lru_cache(maxsize=None)
def typestore(distro: str = "ROS2_HUMBLE") -> Any:
    """A rosbags type store for `distro` with vision_msgs present (built once per distro)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(getattr(Stores, distro))
    if DETECTIONS not in store.types:
        types: dict = {}
        for name, text in VISION_MSGS.items():
            types.update(get_types_from_msg(text, name))
        store.register(types)
        log.debug("registered vision_msgs 4.x definitions in the %s type store", distro)
    return store


class RosbagsKit:
    """Messages as rosbags dataclasses (serialise with ``store.serialize_cdr(msg, typename)``)."""

    def __init__(self, store: Any | None = None) -> None:
        self.store = store if store is not None else typestore()

    def new(self, typename: str, **fields: Any) -> Any:
        return self.store.types[typename](**fields)

    def u8(self, data: bytes) -> Any:
        return np.frombuffer(data, np.uint8)

    def f64(self, values: Iterable[float], n: int) -> Any:
        out = np.zeros(n, np.float64)
        out[:] = list(values) or 0.0
        return out

    def serialize(self, msg: Any) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))


class RclpyKit:
    """Messages as rclpy's generated classes (imported on first use: needs a sourced ROS 2)."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def new(self, typename: str, **fields: Any) -> Any:
        cls = self._classes.get(typename)
        if cls is None:
            pkg, kind, name = typename.split("/")
            cls = getattr(importlib.import_module(f"{pkg}.{kind}"), name)
            self._classes[typename] = cls
        return cls(**fields)

    def u8(self, data: bytes) -> Any:
        out = array.array("B")
        out.frombytes(data)
        return out

    def f64(self, values: Iterable[float], n: int) -> Any:
        out = np.zeros(n, np.float64)
        out[:] = list(values) or 0.0
        return out


# -- builders (every field given, so rosbags' dataclasses and rclpy's classes both accept them) ---
def header(kit: MessageKit, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = split_ns(stamp_ns)
    return kit.new("std_msgs/msg/Header", stamp=kit.new("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec),
                   frame_id=frame_id)


def copy_header(kit: MessageKit, src: Any) -> Any:
    """The same stamp and frame_id as `src` (an input message's header), in `kit`'s classes."""
    return kit.new("std_msgs/msg/Header",
                   stamp=kit.new("builtin_interfaces/msg/Time", sec=int(src.stamp.sec), nanosec=int(src.stamp.nanosec)),
                   frame_id=str(src.frame_id))


def image(kit: MessageKit, hdr: Any, fields: ImageFields) -> Any:
    return kit.new(IMAGE, header=hdr, height=fields.height, width=fields.width, encoding=fields.encoding,
                   is_bigendian=fields.is_bigendian, step=fields.step, data=kit.u8(fields.data))


def compressed_image(kit: MessageKit, hdr: Any, fmt: str, data: bytes) -> Any:
    return kit.new(COMPRESSED_IMAGE, header=hdr, format=fmt, data=kit.u8(data))


def string(kit: MessageKit, text: str) -> Any:
    return kit.new(STRING, data=text)


def detections(kit: MessageKit, hdr: Any, boxes: list[ObjectBox]) -> Any:
    """Detection2DArray: one Detection2D per visible object, `id` = the user's object id."""
    dets = []
    for b in boxes:
        cx, cy = b.center
        w, h = b.size
        pose = kit.new("geometry_msgs/msg/PoseWithCovariance",
                       pose=kit.new("geometry_msgs/msg/Pose",
                                    position=kit.new("geometry_msgs/msg/Point", x=0.0, y=0.0, z=0.0),
                                    orientation=kit.new("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0)),
                       covariance=kit.f64([], 36))
        hyp = kit.new("vision_msgs/msg/ObjectHypothesisWithPose",
                      hypothesis=kit.new("vision_msgs/msg/ObjectHypothesis", class_id=b.object_id, score=b.score),
                      pose=pose)
        bbox = kit.new("vision_msgs/msg/BoundingBox2D",
                       center=kit.new("vision_msgs/msg/Pose2D",
                                      position=kit.new("vision_msgs/msg/Point2D", x=float(cx), y=float(cy)), theta=0.0),
                       size_x=float(w), size_y=float(h))
        dets.append(kit.new("vision_msgs/msg/Detection2D", header=copy_header(kit, hdr), results=[hyp], bbox=bbox,
                            id=b.object_id))
    return kit.new(DETECTIONS, header=hdr, detections=dets)
