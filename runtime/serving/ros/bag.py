"""rosbag2 I/O with `rosbags` (pure Python; sqlite3 and MCAP storage): an image-topic reader and
a result writer that always leaves a complete, readable bag.

Reader: frames come in the bag's record order (receive time). Each is a ``BagFrame`` with the
RGB image, or an ``error`` when that message cannot be used (undecodable, unsupported encoding,
frame size differs from the first frame): a per-frame error record, never a crash mid-bag. Header
stamps that go backwards are flagged (``out_of_order``) and counted; the frame is still
processed in record order, as a live subscriber would receive it.

A bag folder without ``metadata.yaml`` (a recorder that died, a bare ``.mcap`` copied from
elsewhere) is opened from its one storage file, as ``ros2 bag reindex`` would. An ``.mcap`` file
cut short (its writer was killed: no summary, no footer) is read record by record up to its last
complete message with the ``mcap`` package (``TruncatedMcapReader``), with one warning.

Writer: ``ResultBagWriter`` is a context manager whose exit *closes* the bag (metadata.yaml
written) whether the block ended normally, on an error or on Ctrl-C, so whatever was written up
to the stop is a valid bag. Against a harder stop (SIGKILL, power loss) it commits the sqlite3
transaction (MCAP: closes the chunk) and rewrites ``metadata.yaml`` at most ``FLUSH_INTERVAL_S``
after a write, and writes ``metadata.yaml`` as soon as the topics exist: a killed writer leaves
a bag with what it wrote up to the last second (sqlite3: readable as is; MCAP: through the
truncated-file reader above). Metadata is filled as rosbag2 fills it: the ROS distribution of
the message definitions, and each topic's offered QoS (the node's publishers: reliable,
volatile, keep last 10), so ``ros2 bag play`` republishes alike.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s3rt.errors import BagError, RosMessageError
from s3rt.optional import optional
from s3rt.runtime.serving.ros import convert, messages

log = logging.getLogger(__name__)

rosbags = optional("rosbags", extra="ros")   # rosbags has no __version__; pyproject pins >= 0.10
mcap = optional("mcap", extra="ros")          # only for reading .mcap files cut short
STORAGES = ("sqlite3", "mcap")
IMAGE_TYPES = (messages.IMAGE, messages.COMPRESSED_IMAGE)
STORAGE_SUFFIXES = (".mcap", ".db3")
BAG_ROS_DISTRO = "humble"        # the message definitions written: rosbags' ROS2_HUMBLE type store
FLUSH_INTERVAL_S = 1.0           # most data a SIGKILL can cost an output bag (seconds of writing)
OUTPUT_DEPTH = 10                # history depth of the node's publishers (offered QoS in the metadata)


def storage_source(path: Path) -> Path:
    """What to open for the bag at `path`: the folder when it has metadata.yaml, else its one
    storage file (.mcap or .db3), which rosbags reads without metadata."""
    if not path.is_dir() or (path / "metadata.yaml").is_file():
        return path
    files = sorted(f for f in path.iterdir() if f.suffix in STORAGE_SUFFIXES)
    if len(files) == 1:
        log.info("%s has no metadata.yaml: reading %s directly", path, files[0].name)
        return files[0]
    if not files:
        raise BagError(f"{path}: not a rosbag2 folder (no metadata.yaml and no .mcap or .db3 file)")
    raise BagError(f"{path}: no metadata.yaml and {len(files)} storage files ({', '.join(f.name for f in files)}); "
                   "restore metadata.yaml (ros2 bag reindex) or pass one storage file")


def offered_qos(depth: int = OUTPUT_DEPTH) -> Any:
    """The QoS rosbag2 records for a default publisher: reliable, volatile, keep last `depth`,
    infinite deadline/lifespan/lease (rmw's "default" durations)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(sec=9223372036, nsec=854775807)
    return Qos(history=QosHistory.KEEP_LAST, depth=depth, reliability=QosReliability.RELIABLE,
               durability=QosDurability.VOLATILE, deadline=infinite, lifespan=infinite,
               liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=infinite,
               avoid_ros_namespace_conventions=False)


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
        self._reader = open_bag(self.path)
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
        self._flushed_at = 0.0

    def open(self) -> "ResultBagWriter":
        rosbags.load()
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        if self.storage == "sqlite3":        # rosbag2 records its distribution in the schema table too
            self._writer.storage.cursor.execute("UPDATE schema SET ros_distro = ?", (BAG_ROS_DISTRO,))
        types = {"mask": messages.IMAGE, "detections": messages.DETECTIONS, "timing": messages.STRING}
        for key, topic in self.topics.items():
            if topic:
                self._conns[key] = self._writer.add_connection(topic, types[key], typestore=self.kit.store,
                                                               offered_qos_profiles=[offered_qos()])
        self.flush()                        # metadata.yaml from the start: the topics are known
        return self

    def _write(self, key: str, bag_ns: int, msg: Any) -> None:
        if key in self._conns:
            self._writer.write(self._conns[key], bag_ns, self.kit.serialize(msg))
            self.counts[key] += 1
            if time.monotonic() - self._flushed_at >= FLUSH_INTERVAL_S:
                self.flush()

    def flush(self) -> None:
        """Make what was written so far durable and readable: commit (sqlite3) or close the chunk
        (MCAP), then rewrite metadata.yaml to match."""
        storage = self._writer.storage
        if self.storage == "sqlite3":
            storage.conn.commit()
        else:
            if storage.chunk.bio.tell():
                storage.close_chunk()
            storage.bio.flush()
        _write_metadata_yaml(self._writer, _metadata(self._writer))
        self._flushed_at = time.monotonic()

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
            _close(writer)

    def __enter__(self) -> "ResultBagWriter":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()      # also on errors and KeyboardInterrupt: never leave a half-written bag


def _metadata(writer: Any) -> dict:
    """rosbag2's bag information for what `writer` (a rosbags Writer) holds now, with the ROS
    distribution of the definitions (rosbags writes "rosbags") and the topics' offered QoS."""
    from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9

    dump_qos = dump_qos_v9 if writer.version >= 9 else dump_qos_v8
    count = sum(writer.counts.values())
    start = writer.min_timestamp if count else 0
    duration = max(0, writer.max_timestamp - writer.min_timestamp) if count else 0
    name = writer.storage.path.name
    return {
        "version": writer.version,
        "storage_identifier": writer.storage_plugin.name.lower(),
        "relative_file_paths": [name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {"topic_metadata": {"name": c.topic, "type": c.msgtype,
                                "serialization_format": c.ext.serialization_format,
                                "offered_qos_profiles": dump_qos(c.ext.offered_qos_profiles),
                                "type_description_hash": c.digest},
             "message_count": writer.counts[c.id]}
            for c in writer.connections],
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": duration}, "message_count": count}],
        "custom_data": writer.custom_data or None,
        "ros_distro": BAG_ROS_DISTRO,
    }


def _yaml(data: dict) -> str:
    from io import StringIO

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    out = StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _write_metadata_yaml(writer: Any, info: dict) -> None:
    tmp = writer.metapath.with_suffix(".yaml.tmp")
    tmp.write_text(_yaml({"rosbag2_bagfile_information": info}), "utf8")
    tmp.replace(writer.metapath)


def _close(writer: Any) -> None:
    """rosbags' Writer.close with our metadata (no compression is ever set here): the storage
    gets the same bag information as metadata.yaml (MCAP embeds it, sqlite3 stores it)."""
    info = _metadata(writer)
    storage, writer.storage = writer.storage, None
    storage.close(writer.version, _yaml(info).strip())
    _write_metadata_yaml(writer, info)


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
    with closing(open_bag(Path(path))) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=conns)]


def open_bag(path: Path) -> Any:
    """An open reader of the bag at `path`: rosbags' AnyReader, or, for an .mcap file without its
    summary/footer (writer killed), a ``TruncatedMcapReader`` over its complete records. Both give
    connections (topic, msgtype, msgcount), message_count, start/end_time, messages(connections=),
    deserialize(raw, msgtype) and close()."""
    from rosbags.highlevel import AnyReader

    source = storage_source(path)
    reader = AnyReader([source], default_typestore=messages.typestore())
    try:
        reader.open()
        return reader
    except Exception as exc:   # noqa: BLE001 - rosbags raises several error types for a broken bag
        unreadable = BagError(f"{path}: not a readable rosbag2 folder ({exc})")
        unreadable.__cause__ = exc
    mcap_file = _mcap_file(source)
    if mcap_file is None or _has_footer(mcap_file):
        raise unreadable
    recovered = TruncatedMcapReader(mcap_file)
    if not recovered.connections:         # not even one channel record: nothing to recover
        raise unreadable
    return recovered


def _mcap_file(source: Path) -> Path | None:
    """The .mcap storage file of a bag folder or file, or None for any other storage."""
    files = [source] if source.is_file() else sorted(source.glob("*.mcap"))
    return files[0] if len(files) == 1 and files[0].suffix == ".mcap" else None


MCAP_MAGIC = b"\x89MCAP0\r\n"


def _has_footer(path: Path) -> bool:
    """Whether the file ends in MCAP's closing magic (a complete file: any other failure is real)."""
    with path.open("rb") as f:
        f.seek(0, 2)
        if f.tell() < 2 * len(MCAP_MAGIC):
            return False
        f.seek(-len(MCAP_MAGIC), 2)
        return f.read() == MCAP_MAGIC


class _CutShort(Exception):
    """The file ended inside a record."""


class _WholeReads:
    """A binary file whose reads return all the bytes asked for or raise ``_CutShort``: the mcap
    stream reader would otherwise parse a record cut at end of file from the bytes that are there."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if 0 <= n != len(data):
            raise _CutShort
        return data


@dataclass
class RecoveredTopic:
    """A channel of a truncated .mcap, shaped like rosbags' Connection where the readers use it."""

    id: int
    topic: str
    msgtype: str
    msgcount: int


class TruncatedMcapReader:
    """The complete messages of an .mcap file whose writer died before the summary and footer.

    The file is read sequentially (``mcap.stream_reader.StreamReader``) until the first record
    that ends past end of file. One scan at open counts the messages (and logs one warning);
    ``messages()`` scans again, so memory stays at one record whatever the file size. Payloads
    are CDR (rosbag2's MCAP) and deserialised with the same rosbags type store as AnyReader.
    """

    def __init__(self, path: Path) -> None:
        mcap.load()
        self.path = path
        self.typestore = messages.typestore()
        self._topics: dict[int, RecoveredTopic] = {}
        self.message_count = 0
        self.start_time, self.end_time = 2**63 - 1, 0    # as rosbags: end exclusive, these when empty
        for _, bag_ns, _ in self._scan():
            self.message_count += 1
            self.start_time, self.end_time = min(self.start_time, bag_ns), max(self.end_time, bag_ns + 1)
        log.warning("%s is truncated (no summary/footer: its writer stopped without closing it); "
                    "recovered %d complete messages", path, self.message_count)

    @property
    def connections(self) -> list[RecoveredTopic]:
        return list(self._topics.values())

    def _scan(self) -> Iterator[tuple[RecoveredTopic, int, bytes]]:
        from mcap.exceptions import EndOfFile, McapError
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, str] = {}
        counting = not self._topics
        with self.path.open("rb") as f:
            records = StreamReader(_WholeReads(f)).records
            while True:
                try:
                    record = next(records)
                except (StopIteration, _CutShort, EndOfFile):   # the cut: the end of what was written
                    return
                except (McapError, struct.error, ValueError) as exc:   # bytes that are no MCAP record: stop
                    log.warning("%s: unreadable record after the recovered part (%s)", self.path, exc)
                    return
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel) and counting and record.id not in self._topics:   # summary: again
                    self._topics[record.id] = RecoveredTopic(record.id, record.topic,
                                                             schemas.get(record.schema_id, ""), 0)
                elif isinstance(record, Message) and record.channel_id in self._topics:
                    topic = self._topics[record.channel_id]
                    if counting:
                        topic.msgcount += 1
                    yield topic, record.log_time, record.data

    def messages(self, connections: Any = ()) -> Iterator[tuple[RecoveredTopic, int, bytes]]:
        """(topic, record time, CDR bytes) in file order, only of `connections` when given."""
        wanted = {c.id for c in connections}
        remaining = sum(c.msgcount for c in connections) if connections else self.message_count
        for item in self._scan():
            if remaining <= 0:       # the scan at open ended here: never read past it
                return
            if not wanted or item[0].id in wanted:
                remaining -= 1
                yield item

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        """Nothing held open between scans."""
