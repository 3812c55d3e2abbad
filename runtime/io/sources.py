"""Frame sources for `s3rt run`: a folder of frames, a video file (PyAV), a camera (OpenCV) or a
rosbag2 image topic (rosbags)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from s3rt.errors import ConfigError
from s3rt.runtime.io.files import Frame, scan_frames


@dataclass
class FrameSource:
    frames: Callable[[], Iterator[Frame]]
    count: int | None
    fps: float = 24.0


def open_source(*, frames: str | None = None, video: str | None = None, camera: int | None = None,
                max_frames: int | None = None, rosbag: str | None = None,
                image_topic: str | None = None) -> FrameSource:
    given = [x for x in (frames, video, camera, rosbag) if x is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one input: --frames DIR, --video FILE, --camera INDEX or --rosbag DIR")
    if (rosbag is None) != (image_topic is None):
        raise ConfigError("--rosbag DIR and --image-topic T go together")
    if rosbag is not None:
        from s3rt.runtime.serving.ros.bag import image_topic_source   # the reader `s3rt replay` uses
        return image_topic_source(rosbag, image_topic, max_frames=max_frames)  # type: ignore[arg-type]
    if frames is not None:
        listing = scan_frames(frames)           # entries that are no image file come as Frames with an error
        count = len(listing.files) + len(listing.skipped)
        count = min(count, max_frames) if max_frames else count

        def gen() -> Iterator[Frame]:
            return itertools.islice(listing.frames(), count)
        return FrameSource(gen, count)
    if video is not None:
        from s3rt.runtime.io.video import open_video
        return open_video(video, max_frames=max_frames)
    from s3rt.runtime.io.video import open_camera
    return open_camera(int(camera), max_frames=max_frames)  # type: ignore[arg-type]


class OverlayWriter:
    """Collects frames + masks into an mp4 overlay (implemented in s3rt.runtime.io.video)."""

    def __init__(self, path: str | Path, *, palette: list[int] | None, fps: float) -> None:
        from s3rt.runtime.io.video import VideoOverlayWriter
        self._writer = VideoOverlayWriter(path, palette=palette, fps=fps)

    def add(self, frame: Frame, result: object) -> None:
        self._writer.add(frame.image, result.index_mask)  # type: ignore[attr-defined]

    def close(self) -> None:
        self._writer.close()


