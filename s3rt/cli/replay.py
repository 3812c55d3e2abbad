"""Replay a rosbag2 image topic (sqlite3 or MCAP) through s3rt and record the results in a new bag.

Reads sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) or CompressedImage (jpeg, png)
from --image-topic; writes, per processed frame, a mono8/mono16 label image (value = label, 0 =
background) with the input header copied (stamp, frame_id) on --mask-topic, a
vision_msgs/Detection2DArray (box per visible object, id = the object's id) on
--detections-topic, and for every input frame a JSON timing record (std_msgs/String: status,
queue/inference/end-to-end ms, drops) on --timing-topic. Objects come from --mask (index PNG,
id = pixel value) or --prompts (JSON: {"objects": [{"id": "cup", "mask": "cup.png"},
{"id": "box", "box": [x0, y0, x1, y1]}]}, paths relative to the file), given on the first frame.

By default every frame is processed; --realtime follows the recorded times (faster with --rate),
so frames the model cannot keep up with are dropped as in a live run. The output bag is complete
and readable even when the replay stops on an error or Ctrl-C.

examples:
  s3rt replay --model exported/ --backend onnxruntime --bag run1/ --image-topic /camera/image_raw \\
      --mask first.png --out-bag run1_masks/
  s3rt replay --config tiny --bag run1/ --image-topic /camera/image_raw --mask first.png \\
      --out-bag rt/ --realtime --rate 4 --deadline-ms 200
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from s3rt.cli.common import (add_backend_args, add_loop_args, add_model_args, add_plugin_lib, add_verbose,
                             backend_from_args, tracker_factory_from_args)
from s3rt.errors import ConfigError, InputError

log = logging.getLogger("s3rt.replay")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay a rosbag2 image topic, write masks/detections/timing to a new bag",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_backend_args(p)
    add_plugin_lib(p)
    g = p.add_argument_group("bag input")
    g.add_argument("--bag", metavar="DIR", required=True, help="input rosbag2 folder (sqlite3 or MCAP)")
    g.add_argument("--image-topic", metavar="T", required=True, help="sensor_msgs/Image or CompressedImage topic")
    g.add_argument("--mask", metavar="PNG", help="first-frame index mask (value = label; id = str(value))")
    g.add_argument("--prompts", metavar="JSON", help="first-frame objects by string id: masks and/or boxes")
    o = p.add_argument_group("bag output")
    o.add_argument("--out-bag", metavar="DIR", required=True, help="output rosbag2 folder (must not exist)")
    o.add_argument("--storage", choices=("sqlite3", "mcap"), help="output storage (default: the input's)")
    o.add_argument("--mask-topic", default="/s3rt/mask", help="label image topic (default /s3rt/mask)")
    o.add_argument("--detections-topic", default="/s3rt/detections",
                   help="vision_msgs/Detection2DArray topic (default /s3rt/detections)")
    o.add_argument("--timing-topic", default="/s3rt/timing", help="per-frame timing JSON topic (default /s3rt/timing)")
    o.add_argument("--report", metavar="JSON", help="also write the replay summary here")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = p.add_argument_group("real time")
    r.add_argument("--realtime", action="store_true", help="submit frames at their recorded times; drops as live")
    r.add_argument("--rate", type=float, default=1.0, help="with --realtime: play this many times faster (default 1)")
    r.add_argument("--deadline-ms", type=float, help="with --realtime: drop a frame older than this at dequeue "
                   "(default: none, only latest-frame-wins drops)")
    add_loop_args(p)
    add_verbose(p)
    p.set_defaults(func=run)


def load_prompts(path: str | Path, frame_hw: tuple[int, int]) -> dict[str, "object"]:
    """{id: (H, W) bool mask} from a prompts JSON file (masks are PNGs, nonzero = object)."""
    from s3rt.runtime.io.files import read_mask
    from s3rt.runtime.serving.ros.convert import box_mask

    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"--prompts {path}: unreadable JSON ({exc})") from exc
    objects = spec.get("objects") if isinstance(spec, dict) else None
    if not isinstance(objects, list) or not objects:
        raise InputError(f"--prompts {path}: expected {{\"objects\": [{{\"id\": ..., \"mask\"|\"box\": ...}}, ...]}}")
    out: dict[str, object] = {}
    for i, obj in enumerate(objects):
        oid = str(obj.get("id", "")) if isinstance(obj, dict) else ""
        if not oid or oid in out:
            raise InputError(f"--prompts {path}: object {i} needs a unique non-empty 'id' (got '{oid}')")
        if "mask" in obj:
            mask, _ = read_mask(path.parent / obj["mask"])
            if mask.shape != frame_hw:
                raise InputError(f"--prompts {path}: mask of '{oid}' is {mask.shape[0]}x{mask.shape[1]}, "
                                 f"the frames are {frame_hw[0]}x{frame_hw[1]}")
            out[oid] = mask != 0
        elif "box" in obj and len(obj["box"]) == 4:
            out[oid] = box_mask(frame_hw, tuple(float(v) for v in obj["box"]))
        else:
            raise InputError(f"--prompts {path}: object '{oid}' needs 'mask' (PNG path) or 'box' [x0, y0, x1, y1]")
    return out


def _prompt(args: argparse.Namespace):
    from s3rt.runtime.io.files import read_mask
    from s3rt.runtime.offline.pipeline import fit_mask

    def give(session, frame_hw: tuple[int, int]) -> dict[str, int]:
        if args.mask:
            mask, _ = read_mask(args.mask)
            return session.add_index_mask(fit_mask(mask, frame_hw, resize=False, source=f"--mask {args.mask}"))
        return session.add_objects(load_prompts(args.prompts, frame_hw))
    return give


def run(args: argparse.Namespace) -> int:
    from s3rt.runtime.serving.ros.bag import ImageTopicReader, ResultBagWriter
    from s3rt.runtime.serving.ros.core_session import CoreSession
    from s3rt.runtime.serving.ros.bag_replay import ReplayReport, replay

    if (args.mask is None) == (args.prompts is None):
        raise ConfigError("give the first frame's objects with exactly one of --mask PNG or --prompts JSON")
    if not args.realtime and (args.rate != 1.0 or args.deadline_ms is not None):
        raise ConfigError("--rate and --deadline-ms apply only with --realtime")
    if args.rate <= 0 or (args.deadline_ms is not None and args.deadline_ms <= 0):
        raise ConfigError(f"--rate and --deadline-ms must be > 0, got {args.rate} and {args.deadline_ms}")
    reader = ImageTopicReader(args.bag, args.image_topic)
    backend, notes = backend_from_args(args)
    report = ReplayReport()
    try:
        with backend, ResultBagWriter(args.out_bag, storage=args.storage or reader.storage, mask_topic=args.mask_topic,
                                      detections_topic=args.detections_topic, timing_topic=args.timing_topic) as writer:
            session = CoreSession.open(tracker_factory_from_args(args, backend)(), realtime=args.realtime,
                                       deadline_ms=args.deadline_ms)
            from tqdm import tqdm
            try:
                with tqdm(total=reader.count, desc="replaying", unit="frame", disable=args.no_progress,
                          leave=False) as bar:
                    replay(reader, session, writer, prompt=_prompt(args), realtime=args.realtime, rate=args.rate,
                           progress=bar.update, report=report)
            finally:
                session.close()
    finally:
        reader.close()
        summary = report.summary()
        summary["notes"] = notes
        if args.report:     # also when the replay stopped early: says how far it got and why
            Path(args.report).write_text(json.dumps(summary, indent=2) + "\n")
    drops = ", ".join(f"{k}={v}" for k, v in summary["dropped"].items()) or "none"
    print(f"replayed {summary['frames_in']} frames of {args.image_topic}: {summary['processed']} processed, "
          f"drops {drops}, {summary['errors']} frame errors, {summary['out_of_order_stamps']} out-of-order stamps; "
          f"wrote {args.out_bag} ({', '.join(f'{k} {v}' for k, v in summary['written'].items())})")
    return 0
