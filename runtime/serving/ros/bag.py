"""rosbag2 I/O with `rosbags` (pure Python; sqlite3 and MCAP storage): an image-topic reader and
a result writer that always leaves a complete, readable bag.

Reader: frames come in the bag's record order (receive time). Each is a ``BagFrame`` with the
RGB image, or an ``error`` when that message cannot be used (undecodable, unsupported encoding,
frame size differs from the first frame): a per-frame error record, never a crash mid-bag. Header
stamps that go backwards are flagged (``out_of_order``) and counted; the frame is still
processed in record order, as a live subscriber would receive it.

Writer: ``ResultBagWriter`` is a context manager whose exit *closes* the bag (metadata.yaml
written) whether the block ended normally, on an error or on Ctrl-C, so whatever was written up
to the stop is a valid bag.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s3rt.errors import BagError, RosMessageError
from s3rt.optional import optional
from s3rt.runtime.serving.ros import convert, messages

log = logging.getLogger(__name__)

rosbags = optional("rosbags", extra="ros")   # rosbags has no __version__; pyproject pins >= 0.10
STORAGES = ("sqlite3", "mcap")
IMAGE_TYPES = (messages.IMAGE, messages.COMPRESSED_IMAGE)


@dataclass
class BagFrame:
    """One message of the image topic, decoded (or the reason it could not be)."""

    seq: int                      # 0-based position on the topic
    bag_ns: int                   # record (receive) time in the bag
    stamp_ns: int                 # header stamp
    header: Any                   # the input header (rosbags dataclass), copied onto every output
    image: np.ndarray | None      # (H, W, 3) uint8 RGB, None when `error` is set
    error: str | None = None
    out_of_order: bool = False    # header stamp earlier than the previous frame's


def _check_storage(storage: str) -> None:
    if storage not in STORAGES:
        raise BagError(f"unknown bag storage '{storage}'; choose one of {', '.join(STORAGES)}")


class ImageTopicReader:
    """Frames of one Image/CompressedImage topic of a rosbag2 folder (sqlite3 or MCAP)."""

    def __init__(self, path: str | Path, topic: str) -> None:
        self.path = Path(path)
        self.topic = topic
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        rosbags.load()     # MissingDependencyError naming the 'ros' extra when absent
        from rosbags.highlevel import AnyReader
        self._reader = AnyReader([self.path], default_typestore=messages.typestore())
        try:
            self._reader.open()
        except Exception as exc:   # noqa: BLE001 - rosbags raises several error types for a broken bag
            raise BagError(f"{self.path}: not a readable rosbag2 folder ({exc})") from exc
        try:
            self._connections = self._find_topic()
        except BagError:
            self._reader.close()
            raise
        self.msgtype = self._connections[0].msgtype
        self.count = sum(c.msgcount for c in self._connections)

    def _find_topic(self) -> list[Any]:
        conns = self._reader.connections
        if not conns or self._reader.message_count == 0:
            raise BagError(f"{self.path}: the bag is empty (no messages on any topic)")
        mine = [c for c in conns if c.topic == self.topic]
        if not mine:
            present = ", ".join(f"{c.topic} ({c.msgtype}, {c.msgcount} msgs)" for c in conns)
            raise BagError(f"{self.path}: no topic '{self.topic}'; topics present: {present}")
        bad = [c.msgtype for c in mine if c.msgtype not in IMAGE_TYPES]
        if bad:
            raise BagError(f"{self.path}: topic '{self.topic}' is {bad[0]}; expected {' or '.join(IMAGE_TYPES)}")
        if sum(c.msgcount for c in mine) == 0:
            raise BagError(f"{self.path}: topic '{self.topic}' has no messages")
        return mine

    @property
    def storage(self) -> str:
        """'mcap' or 'sqlite3', from the storage files in the bag folder."""
        files = [self.path] if self.path.is_file() else list(self.path.iterdir())
        return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"

    @property
    def rate_hz(self) -> float | None:
        """Messages per second of the topic when it is the bag's only topic (else None: unknown)."""
        if len(self._reader.connections) != len(self._connections) or self.count < 2:
            return None
        span_s = (self._reader.end_time - self._reader.start_time) / 1e9
        return (self.count - 1) / span_s if span_s > 0 else None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "ImageTopicReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[BagFrame]:
        first_hw: tuple[int, int] | None = None
        last_stamp: int | None = None
        for seq, (conn, bag_ns, raw) in enumerate(self._reader.messages(connections=self._connections)):
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
            except Exception as exc:   # noqa: BLE001 - a corrupt record is one frame's error, not the bag's
                yield BagFrame(seq, bag_ns, 0, None, None, error=f"undeserialisable message ({exc})")
                continue
            stamp = convert.stamp_ns(msg.header.stamp)
            frame = BagFrame(seq, bag_ns, stamp, msg.header, None,
                             out_of_order=last_stamp is not None and stamp < last_stamp)
            last_stamp = stamp if last_stamp is None else max(last_stamp, stamp)
            try:
                rgb = (convert.image_to_rgb(msg) if conn.msgtype == messages.IMAGE
                       else convert.compressed_to_rgb(msg))
            except RosMessageError as exc:
                frame.error = str(exc)
                yield frame
                continue
            hw = rgb.shape[:2]
            if first_hw is None:
                first_hw = hw
            elif hw != first_hw:
                frame.error = (f"frame size changed mid-bag: {hw[0]}x{hw[1]}, the stream started at "
                               f"{first_hw[0]}x{first_hw[1]}; frame skipped")
                yield frame
                continue
            frame.image = rgb
            yield frame


def image_topic_source(path: str | Path, topic: str, *, max_frames: int | None = None) -> Any:
    """An image topic as `s3rt run`'s FrameSource: frames named by topic position (000000, ...);
    a frame the reader cannot use comes as Frame(error=...), which `run` skips and reports.

    The topic is checked now (missing topic, empty bag: BagError); the bag closes when the
    frames are exhausted or the run stops.
    """
    from s3rt.runtime.io.files import Frame
    from s3rt.runtime.io.sources import FrameSource

    reader = ImageTopicReader(path, topic)
    count = reader.count if max_frames is None else min(reader.count, max_frames)

    def frames() -> Iterator[Frame]:
        try:
            for frame in reader:
                if frame.seq >= count:
                    return
                yield Frame(f"{frame.seq:06d}", frame.image, error=frame.error)
        finally:
            reader.close()
    return FrameSource(frames, count, fps=reader.rate_hz or 24.0)


class ResultBagWriter:
    """Write masks, detections and timing to a new rosbag2; always closed into a readable bag."""

    def __init__(self, path: str | Path, *, storage: str = "sqlite3", mask_topic: str = "/s3rt/mask",
                 detections_topic: str | None = "/s3rt/detections", timing_topic: str | None = "/s3rt/timing") -> None:
        _check_storage(storage)
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} exists already; choose a new path (bags are never overwritten)")
        self.storage = storage
        self.kit = messages.RosbagsKit()
        self.topics = {"mask": mask_topic, "detections": detections_topic, "timing": timing_topic}
        self.counts = {k: 0 for k in self.topics}
        self._writer: Any = None
        self._conns: dict[str, Any] = {}

    def open(self) -> "ResultBagWriter":
        rosbags.load()
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        types = {"mask": messages.IMAGE, "detections": messages.DETECTIONS, "timing": messages.STRING}
        for key, topic in self.topics.items():
            if topic:
                self._conns[key] = self._writer.add_connection(topic, types[key], typestore=self.kit.store)
        return self

    def _write(self, key: str, bag_ns: int, msg: Any) -> None:
        if key in self._conns:
            self._writer.write(self._conns[key], bag_ns, self.kit.serialize(msg))
            self.counts[key] += 1

    def write_result(self, bag_ns: int, header: Any, labels: np.ndarray, boxes: list[convert.ObjectBox]) -> None:
        """One processed frame: label image + detections, both with the input header copied."""
        hdr = messages.copy_header(self.kit, header)
        self._write("mask", bag_ns, messages.image(self.kit, hdr, convert.label_image(labels)))
        self._write("detections", bag_ns, messages.detections(self.kit, hdr, boxes))

    def write_timing(self, bag_ns: int, record: dict) -> None:
        self._write("timing", bag_ns, messages.string(self.kit, convert.timing_json(record)))

    def close(self) -> None:
        """Write the index and metadata.yaml: the bag is complete with what was written so far."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def __enter__(self) -> "ResultBagWriter":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()      # also on errors and KeyboardInterrupt: never leave a half-written bag


def write_image_bag(path: str | Path, frames: list[np.ndarray], *, topic: str = "/camera/image_raw",
                    storage: str = "sqlite3", encoding: str = "rgb8", compressed: str | None = None,
                    stamps_ns: list[int] | None = None, frame_id: str = "camera", period_ns: int = 33_333_333,
                    row_padding: int = 0, extra_topics: dict[str, str] | None = None) -> list[int]:
    """A bag of RGB `frames` on one topic (for tests and tools); returns the header stamps written.

    `encoding` re-encodes frames (bgr8, mono8, ...); `compressed` ('jpeg'/'png') writes
    CompressedImage instead; record times are regular (`period_ns`) even when stamps are not.
    """
    _check_storage(storage)
    from rosbags.rosbag2 import StoragePlugin, Writer

    kit = messages.RosbagsKit()
    stamps = list(stamps_ns) if stamps_ns is not None else [1_700_000_000_000_000_000 + i * period_ns
                                                           for i in range(len(frames))]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(Path(path), version=Writer.VERSION_LATEST, storage_plugin=plugin)
    writer.open()
    try:
        conn = writer.add_connection(topic, messages.COMPRESSED_IMAGE if compressed else messages.IMAGE,
                                     typestore=kit.store)
        for name, typename in (extra_topics or {}).items():
            writer.add_connection(name, typename, typestore=kit.store)
        t0 = 1_700_000_000_000_000_000
        for i, (rgb, stamp) in enumerate(zip(frames, stamps)):
            hdr = messages.header(kit, stamp, frame_id)
            if compressed:
                msg = messages.compressed_image(kit, hdr, compressed, convert.encode_compressed(rgb, compressed))
            else:
                msg = messages.image(kit, hdr, convert.encode_image(_from_rgb(rgb, encoding), encoding,
                                                                    row_padding=row_padding))
            writer.write(conn, t0 + i * period_ns, kit.serialize(msg))
    finally:
        writer.close()
    return stamps


def _from_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding in ("rgba8", "bgra8"):
        c = rgb if encoding == "rgba8" else rgb[..., ::-1]
        return np.concatenate([c, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if encoding in ("mono8", "mono16"):
        gray = rgb.mean(axis=2).round().astype(np.uint8)
        return gray if encoding == "mono8" else gray.astype(np.uint16) << 8
    raise RosMessageError(f"cannot write test frames as '{encoding}'")


def read_topic(path: str | Path, topic: str) -> list[tuple[int, Any]]:
    """(record time, deserialised message) of every message on `topic` (for tests and checks)."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(path)], default_typestore=messages.typestore()) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]
