"""Segment a clip: give the first frame's mask, get a mask for every frame.

Input is a folder of frames (sorted by name), a video file, a camera or a rosbag2 image topic
(--rosbag DIR --image-topic T; the reader `s3rt replay` uses). The first-frame mask is an
index/palette PNG (pixel value = object id); --masks DIR may hold more masks named like their
frames, which add objects (or re-annotate them) on those frames. Output: <frame>.png index masks with the input
palette, optionally <frame>.npy float32 (N+1, H, W) probabilities (background first, objects in
sorted id order, at the frame's own resolution), plus report.json / report.md.

examples:
  s3rt run --config s3-base --weights s3.pth --frames clip/ --mask clip_mask.png --out out/
  s3rt run --weights cutie-base-mega.pth --frames clip/ --mask first.png --out out/     (config detected)
  s3rt run --model exported/ --backend onnxruntime --frames clip/ --mask m.png --out out/ --save-probs
  s3rt run --config tiny --video clip.mp4 --mask first.png --max-frames 100 --overlay overlay.mp4 --out out/
  s3rt run --model exported/ --backend onnxruntime --rosbag run1/ --image-topic /camera/image_raw \
      --mask m.png --out out/

A DAVIS-layout dataset (--dataset ROOT: JPEGImages[/480p]/<seq>/, Annotations[/480p]/<seq>/00000.png,
ImageSets/2017/<split>.txt) runs every sequence from its first-frame annotation only, writing
OUT/<seq>/<frame>.png, a report per sequence and OUT/summary.json / summary.md; then score it:
  s3rt run --config s3-base --weights s3.pth --dataset DAVIS/ --split val --out results/
  s3rt eval --pred results/ --gt DAVIS/Annotations/480p --sequences <the val sequences; the summary prints the line>
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from s3rt.cli.common import (add_backend_args, add_loop_args, add_model_args, add_verbose, backend_from_args,
                             tracker_factory_from_args)
from s3rt.errors import ConfigError

log = logging.getLogger("s3rt.run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="segment a clip from a first-frame mask", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_backend_args(p)
    from s3rt.cli.common import add_plugin_lib
    add_plugin_lib(p)
    src = p.add_argument_group("input")
    src.add_argument("--frames", metavar="DIR", help="folder of RGB frames, processed in name order")
    src.add_argument("--video", metavar="FILE", help="a video file (needs the 'video' extra: PyAV)")
    src.add_argument("--camera", metavar="INDEX", type=int, help="a camera index (OpenCV); stop with Ctrl-C "
                     "or --max-frames")
    src.add_argument("--rosbag", metavar="DIR", help="a rosbag2 folder (sqlite3 or MCAP; needs the 'ros' extra): "
                     "segment the frames of --image-topic in record order, masks named 000000.png, ...")
    src.add_argument("--image-topic", metavar="T", help="with --rosbag: the sensor_msgs/Image or "
                     "CompressedImage topic")
    src.add_argument("--dataset", metavar="ROOT", help="a DAVIS-layout dataset: run every sequence from its "
                     "first-frame annotation (no --mask)")
    src.add_argument("--split", metavar="NAME", help="with --dataset: sequences listed in "
                     "ImageSets/2017/NAME.txt, e.g. val (default: every sequence folder)")
    src.add_argument("--sequences", metavar="A,B", help="with --dataset: only these sequences")
    src.add_argument("--max-frames", type=int, help="stop after this many frames (per sequence with --dataset)")
    src.add_argument("--mask", metavar="PNG", help="first-frame index/palette mask (value = object id)")
    src.add_argument("--masks", metavar="DIR", help="more masks named like their frames (<frame>.png)")
    src.add_argument("--resize-masks", action="store_true",
                     help="resize masks whose size differs from their frame (nearest) instead of failing")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", required=True, help="output folder")
    out.add_argument("--save-probs", action="store_true", help="also write <frame>.npy probabilities")
    out.add_argument("--overlay", metavar="MP4", help="also write an overlay video (needs the 'video' extra)")
    out.add_argument("--memory-report", metavar="FILE",
                     help="write memory sizes per frame and object group (permanent / working / long-term tokens, "
                          "consolidation and prune events): JSON if FILE ends in .json, else CSV")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--on-bad-frame", choices=("skip", "fail"), default="skip",
                     help="a corrupt/undecodable frame or one of another size: skip it and list it in the "
                     "report (default), or stop the run with an error; masks already written stay intact "
                     "either way (files are written atomically). The first frame can never be skipped")
    add_loop_args(p)
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.dataset is not None:
        clip_only = [f for f, v in (("--frames", args.frames), ("--video", args.video), ("--camera", args.camera),
                                    ("--rosbag", args.rosbag), ("--image-topic", args.image_topic),
                                    ("--mask", args.mask), ("--masks", args.masks), ("--overlay", args.overlay))
                     if v is not None]
        if clip_only:
            raise ConfigError("--dataset runs every sequence from its own first annotation; "
                              f"drop {', '.join(clip_only)}")
    else:
        with_dataset = [f for f, v in (("--split", args.split), ("--sequences", args.sequences)) if v is not None]
        if with_dataset:
            raise ConfigError(f"{', '.join(with_dataset)} only apply with --dataset ROOT")
        if args.mask is None:
            raise ConfigError("--mask is required: the first frame's index mask (or use --dataset ROOT)")
    if args.dataset is not None and args.memory_report is not None:
        raise ConfigError("--memory-report is for one clip; drop it with --dataset")
    backend, notes = backend_from_args(args)
    if args.dataset is not None:
        return _run_dataset(args, backend, notes)
    return _run_clip(args, backend, notes)


def _run_clip(args: argparse.Namespace, backend, notes: list[str]) -> int:
    from s3rt.runtime.io.files import read_mask
    from s3rt.runtime.offline.pipeline import mask_folder_lookup, run_clip
    from s3rt.runtime.io.sources import open_source

    source = open_source(frames=args.frames, video=args.video, camera=args.camera, max_frames=args.max_frames,
                         rosbag=args.rosbag, image_topic=args.image_topic)
    first_mask, palette = read_mask(args.mask)
    with backend:
        tracker = tracker_factory_from_args(args, backend)()
        overlay = None
        if args.overlay:
            from s3rt.runtime.io.sources import OverlayWriter
            overlay = OverlayWriter(args.overlay, palette=palette, fps=source.fps)
        memory = None
        if args.memory_report:
            from s3rt.runtime.offline.memory_report import MemoryReport
            memory = MemoryReport(tracker)

        def on_result(frame, result) -> None:  # noqa: ANN001 - pipeline callback
            if overlay is not None:
                overlay.add(frame, result)
            if memory is not None:
                memory.record(result, frame.name)
        try:
            report = run_clip(tracker, source.frames(), first_mask=first_mask, out_dir=Path(args.out),
                              palette=palette, extra_masks=mask_folder_lookup(Path(args.masks) if args.masks else None,
                                                                              resize=args.resize_masks),
                              save_probs=args.save_probs, total=source.count,
                              progress=not args.no_progress, resize_masks=args.resize_masks,
                              on_result=on_result,
                              on_bad_frame=args.on_bad_frame)
        finally:
            if overlay is not None:
                overlay.close()
            if memory is not None:
                print(f"wrote the memory report {memory.write(args.memory_report)}")
    report.notes += notes
    report.write(Path(args.out))
    s = report.summary()
    print(f"wrote {report.frames} masks for objects {report.object_ids} to {args.out} "
          f"({s['fps']:.2f} FPS on {args.backend})" if s["fps"] else f"wrote {report.frames} masks to {args.out}")
    if report.bad_frames:
        print(f"skipped {len(report.bad_frames)} bad frame(s): "
              f"{', '.join(b['frame'] for b in report.bad_frames)} (reasons in {Path(args.out) / 'report.json'})")
    if args.overlay:
        print(f"wrote the overlay video {args.overlay}")
    return 0


def _run_dataset(args: argparse.Namespace, backend, notes: list[str]) -> int:
    from s3rt.runtime.io.dataset import iter_dataset, run_dataset

    wanted = [s for s in args.sequences.split(",")] if args.sequences is not None else None
    sequences = list(iter_dataset(args.dataset, args.split, sequences=wanted))
    log.info("%d sequences from %s%s", len(sequences), args.dataset, f" (split {args.split})" if args.split else "")
    with backend:
        report = run_dataset(tracker_factory_from_args(args, backend), sequences, args.out, dataset=args.dataset,
                             split=args.split, max_frames=args.max_frames, save_probs=args.save_probs,
                             resize_masks=args.resize_masks, progress=not args.no_progress)
    report.notes += notes
    report.write(args.out)
    print(report.markdown())
    return 0
