"""Stream a clip or camera to an `s3rt serve` server; write the masks and an overlay.

The first frame's mask (index PNG, value = object id) is sent with the first frame. Files are not
live: a folder or a video is sent frame by frame and every frame is processed in order, unless
you pace it (--fps, or --realtime for the video's own rate), which makes it live: latest frame
wins, late frames are dropped. A camera is live. Masks come back per frame and are written as
<frame>.png with the object ids of --mask; dropped frames get no mask and are listed in
stream_report.json with their reason. The report is written also when the server goes away or
on Ctrl-C (status "server_error" / "interrupted").

examples:
  s3rt stream --server 127.0.0.1:50051 --frames clip/ --mask first.png --out out/ --fps 30
  s3rt stream --server 127.0.0.1:50051 --video clip.mp4 --mask first.png --out out/ --overlay out.mp4
  s3rt stream --server 127.0.0.1:50051 --frames clip/ --mask first.png --out out/ --every-frame
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from s3rt.cli.common import add_verbose
from s3rt.errors import ConfigError, InputError, S3rtError, StateError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="send a clip/camera to a server, write masks + overlay", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of 's3rt serve' (default 127.0.0.1:50051)")
    src = p.add_argument_group("input")
    src.add_argument("--frames", metavar="DIR", help="folder of RGB frames, sent in name order")
    src.add_argument("--video", metavar="FILE", help="a video file (needs the 'video' extra)")
    src.add_argument("--camera", metavar="INDEX", type=int, help="a camera index (OpenCV)")
    src.add_argument("--max-frames", type=int, help="stop after this many frames")
    src.add_argument("--mask", metavar="PNG", required=True, help="first-frame index mask (value = object id)")
    src.add_argument("--fps", type=float, default=0.0, help="pace a folder or video at this rate, as a live "
                     "camera (default 0: every frame in order, as fast as the server goes)")
    src.add_argument("--realtime", action="store_true", help="pace a video at its own frame rate, as a live camera")
    src.add_argument("--encoding", default="rgb8", choices=("rgb8", "bgr8", "jpeg", "png"),
                     help="frame encoding on the wire (default rgb8, raw)")
    pol = p.add_argument_group("stream policy")
    pol.add_argument("--deadline-ms", type=float, default=0.0,
                     help="this stream's deadline (default 0: the server's; negative: none)")
    pol.add_argument("--every-frame", action="store_true", help="process every frame in order even when paced or "
                     "from a camera (no drops; default for unpaced folders and videos)")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", required=True, help="output folder for <frame>.png masks")
    out.add_argument("--overlay", metavar="MP4", help="also write an overlay video (needs the 'video' extra)")
    out.add_argument("--overlay-dir", metavar="DIR", help="also write overlay images <frame>.jpg")
    sec = p.add_argument_group("security")
    sec.add_argument("--token", help="shared secret of the server (--token)")
    sec.add_argument("--tls-ca", metavar="PEM", help="CA certificate of a TLS server")
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from s3rt.runtime.io.files import atomic_write_text, read_mask, write_index_mask
    from s3rt.runtime.io.sources import open_source
    from s3rt.runtime.io.video import draw_overlay, palette_lut
    from s3rt.runtime.serving.grpc.client import Client, ServerError
    from s3rt.runtime.serving.grpc.paced_sender import ReplayStats, replay
    from s3rt.runtime.serving.messages import Result

    source = open_source(frames=args.frames, video=args.video, camera=args.camera, max_frames=args.max_frames)
    mask, palette = read_mask(args.mask)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    it = iter(source.frames())
    first = next(it, None)
    if first is None:
        raise InputError("no frames to stream")
    names: dict[int, str] = {0: first.name}
    ids = {int(v): int(v) for v in np.unique(mask) if v != 0}

    def images():
        for i, f in enumerate(it, 1):
            names[i] = f.name
            yield f.image

    lut = palette_lut(palette)
    video = None
    if args.overlay:
        from s3rt.runtime.io.video import VideoOverlayWriter
        video = VideoOverlayWriter(args.overlay, palette=palette, fps=args.fps or source.fps)
    if args.overlay_dir:
        Path(args.overlay_dir).mkdir(parents=True, exist_ok=True)
    drops: list[dict] = []

    def on_output(out, frame) -> None:
        name = names.get(out.seq, f"{out.seq:05d}")
        if not isinstance(out, Result):
            drops.append({"seq": out.seq, "frame": name, **({"reason": out.reason.value, "detail": out.detail}
                                                             if hasattr(out, "reason") else
                                                             {"error": out.error, "message": out.message})})
            return
        back = np.zeros(max(o.label for o in out.objects) + 1 if out.objects else 1, np.int64)
        for o in out.objects:
            back[o.label] = o.id                      # labels -> the mask's object ids
        index = back[out.labels]
        write_index_mask(out_dir / f"{name}.png", index, palette)
        if frame is not None and (video is not None or args.overlay_dir):
            if video is not None:
                video.add(frame, index)
            if args.overlay_dir:
                Image.fromarray(draw_overlay(frame, index, lut)).save(Path(args.overlay_dir) / f"{name}.jpg", quality=90)

    tls = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    if args.realtime and args.video is None:
        raise ConfigError("--realtime paces a video at its own rate: give --video (or --fps for a folder)")
    fps = args.fps or (source.fps if args.realtime else None)
    every_frame = args.every_frame or (args.camera is None and fps is None)
    stats = ReplayStats()
    status, error = "interrupted", None
    try:
        with Client(args.server, token=args.token, tls_ca=tls) as client:
            stream = client.stream(deadline_ms=None if args.deadline_ms < 0 else args.deadline_ms,
                                   every_frame=every_frame, encoding=args.encoding)
            try:
                replay(stream, first.image, mask, images(), fps=fps, ids=ids, on_output=on_output, stats=stats)
            except S3rtError as exc:
                if stream.error is None:
                    raise
                error = str(exc)
            if stream.error is not None:
                drops.append({"stream_error": str(stream.error)})
                status, error = "server_error", str(stream.error)
            else:
                status = "complete"
    except S3rtError as exc:
        status, error = ("server_error" if isinstance(exc, ServerError) else "failed"), str(exc)
        raise
    finally:
        if video is not None:
            video.close()
        summary = {"status": status, "error": error, **stats.summary(), "server": args.server,
                   "every_frame": every_frame, "fps": fps, "not_processed": drops}
        atomic_write_text(out_dir / "stream_report.json", json.dumps(summary, indent=2) + "\n")
    if status != "complete":
        raise StateError(f"the stream ended early ({status}: {error}); what came back is in {out_dir}")
    s = stats.summary()
    print(f"sent {s['sent']} frames: {s['results']} masks written to {out_dir}, {s['dropped_total']} dropped "
          f"{s['dropped']}, {s['errors']} errors; end-to-end p50 {s['e2e_ms']['p50']:.1f} ms, "
          f"p95 {s['e2e_ms']['p95']:.1f} ms")
    return 0
