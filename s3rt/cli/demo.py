"""The whole job end to end on generated held-out clips, in one command.

Generates held-out synthetic clips (textured, deforming objects with look-alike distractors
over a panning background) with their ground truth, exports the model to ONNX (with a parity
check), tracks every clip with the torch and ONNX Runtime backends from the first-frame mask,
compares the two, scores both against the ground truth (DAVIS J&F), and writes masks, an
overlay picture sheet, an overlay video and a report.

By default the `tiny` model runs with the weights this project trained on synthetic clips
(s3rt/training/weights, recipe in training/RECIPE.md). --random-weights shows the pipeline on
seeded random weights instead (masks meaningless).

example:
  s3rt demo --out demo_out/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s3rt.cli.common import add_verbose


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="export + track + compare + score + pictures on generated clips",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from s3rt.configs import list_configs
    p.add_argument("--out", default="s3rt_demo", metavar="DIR", help="output folder (default s3rt_demo)")
    p.add_argument("--config", default="tiny", choices=list_configs(), help="model variant (default tiny)")
    p.add_argument("--weights", metavar="W", help="checkpoint (default: the project's trained weights when "
                   "the config has them, else seeded random weights)")
    p.add_argument("--random-weights", action="store_true", help="use seeded random weights even if trained ones ship")
    p.add_argument("--clips", type=int, default=8, help="held-out clips to generate (default 8; the sheet shows 4)")
    p.add_argument("--frames", type=int, default=30, help="frames per clip (default 30)")
    p.add_argument("--height", type=int, default=96, help="clip height (default 96, as trained)")
    p.add_argument("--width", type=int, default=160, help="clip width (default 160)")
    p.add_argument("--mem-every", type=int, default=1, help="write memory every N frames (default 1: the trained "
                   "weights learnt with every frame in memory)")
    add_verbose(p)
    p.set_defaults(func=run)


def _weights(args: argparse.Namespace) -> tuple[str | None, str]:
    """-> (checkpoint path or None, a phrase for the report)."""
    from s3rt.training.trained import has_trained_weights, trained_weights
    if args.random_weights:
        return None, "seeded random (masks meaningless)"
    if args.weights:
        return args.weights, f"user checkpoint {args.weights}"
    if has_trained_weights(args.config):
        path = trained_weights(args.config)
        return str(path), f"trained by s3rt on synthetic clips ({path.name}, see training/RECIPE.md)"
    return None, f"seeded random (no trained weights ship for {args.config}; masks meaningless)"


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from s3rt.benchmarks.backend_parity import frame_agreement
    from s3rt.benchmarks.davis_eval import evaluate_davis
    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends import make_backend
    from s3rt.runtime.io.files import Frame, write_index_mask
    from s3rt.runtime.offline.pipeline import run_clip
    from s3rt.runtime.tracker import Tracker
    from s3rt.training.evaluate import held_out_clips
    from s3rt.training.pictures import overlay_sheet, overlay_video

    out = Path(args.out)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    weights, weights_text = _weights(args)
    say(f"[1/6] generating {args.clips} held-out {args.frames}-frame {args.height}x{args.width} clips")
    clips = held_out_clips(args.clips, num_frames=args.frames, height=args.height, width=args.width)
    for c in clips:
        (out / "clip" / "Annotations" / c.name).mkdir(parents=True, exist_ok=True)
        (out / "clip" / "JPEGImages" / c.name).mkdir(parents=True, exist_ok=True)
        for i, (f, m) in enumerate(zip(c.frames, c.masks)):
            Image.fromarray(f).save(out / "clip" / "JPEGImages" / c.name / f"{i:05d}.png")
            write_index_mask(out / "clip" / "Annotations" / c.name / f"{i:05d}.png", m, None)

    say(f"[2/6] exporting {args.config} to ONNX ({weights_text})")
    manifest, rows = export_model(args.config, out_dir=out / "model", height=args.height, width=args.width,
                                  weights=weights, mem_every=args.mem_every, progress=lambda m: say("      " + m))
    worst = max(r.max_abs for r in rows)

    probs: dict[str, list] = {}
    labels: dict[str, dict[str, np.ndarray]] = {}
    fps: dict[str, float] = {}
    for i, name in enumerate(("torch", "onnxruntime"), 3):
        say(f"[{i}/6] tracking with the {name} backend")
        backend = make_backend(name, config=args.config, weights=weights, model_dir=out / "model")
        probs[name], labels[name], lat = [], {}, []
        with backend:
            for c in clips:
                kept: list = []
                tracker = Tracker(backend, manifest.settings, max_short_side=None)
                report = run_clip(tracker, [Frame(f"{k:05d}", f) for k, f in enumerate(c.frames)],
                                  first_mask=c.masks[0], out_dir=out / f"masks_{name}" / c.name, progress=False,
                                  on_result=lambda fr, res: kept.append(res))
                probs[name] += [r.probabilities for r in kept]
                labels[name][c.name] = np.stack([r.index_mask for r in kept])
                lat += report.latencies_ms[1:]
        fps[name] = 1000.0 / float(np.mean(lat))
    diffs, agree = frame_agreement(probs["torch"], probs["onnxruntime"])

    say("[5/6] scoring against the generated ground truth (J&F)")
    scores = {name: evaluate_davis(out / f"masks_{name}", out / "clip" / "Annotations", progress=False)
              for name in probs}
    say("[6/6] drawing the overlay sheet and video")
    shown = [(c.name, c.frames, labels["torch"][c.name], c.masks) for c in clips]
    overlay_sheet(out / "overlay_sheet.png", shown[:4])
    video = overlay_video(out / "overlay.mp4", shown)

    summary = {
        "config": args.config, "weights": weights_text,
        "clips": {"count": len(clips), "frames": args.frames, "size": [args.height, args.width],
                  "names": [c.name for c in clips]},
        "export_worst_abs_error": worst,
        "backends": {n: {"fps": fps[n], "J&F": s["J&F"], "J": s["J"]["mean"], "F": s["F"]["mean"]}
                     for n, s in scores.items()},
        "torch_vs_onnxruntime": {"max_abs_prob_diff": max(diffs), "min_argmax_agreement": min(agree),
                                 "mean_argmax_agreement": float(np.mean(agree))},
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# s3rt demo report", "",
             f"- model: {args.config}, weights: {weights_text}",
             f"- data: {len(clips)} held-out generated clips of {args.frames} frames at {args.height}x{args.width} "
             "(never seen in training: seeds from 500000000 up); each has 1-3 target objects, up to 2 "
             "look-alike distractors (same colour and texture, not to be tracked), deforming shapes, "
             "occlusions and a panning textured background",
             "- the tracker gets only frame 0's mask and follows the objects through the clip; J&F is the "
             "DAVIS-2017 semi-supervised score (1.0 = perfect) against the generator's exact masks",
             f"- tracker: memory written every {manifest.settings.mem_every} frame(s), "
             f"{manifest.settings.max_mem_frames} memory frames, top-k {manifest.settings.top_k}",
             f"- ONNX export: 6 graphs, worst ONNX Runtime vs PyTorch error {worst:.2e}",
             f"- torch vs onnxruntime over all frames: max |dp| {max(diffs):.2e}, argmax agreement "
             f"{100 * float(np.mean(agree)):.3f}% mean, {100 * min(agree):.3f}% worst frame", "",
             "| backend | FPS (this machine) | J | F | J&F vs generated GT |", "|---|---|---|---|---|"]
    for n, b in summary["backends"].items():
        lines.append(f"| {n} | {b['fps']:.1f} | {b['J']:.3f} | {b['F']:.3f} | {b['J&F']:.3f} |")
    lines += ["", "What you are looking at:", "",
              f"- `overlay_sheet.png`: for each of the first {min(4, len(clips))} clips, the upper row is what the tracker (torch backend) "
              "segmented, the lower row the ground truth, at six frames from first to last; each object has "
              "its colour (DAVIS palette: 1 red, 2 green, 3 yellow). Uncoloured look-alike shapes are the "
              "distractors the model must not pick up.",
              f"- `{video.name}`: every clip played in turn, tracked masks on the left, ground truth on the right.",
              f"- masks: `masks_torch/`, `masks_onnxruntime/` (one folder per clip, palette PNGs); "
              "frames and ground truth: `clip/`; ONNX graphs: `model/`.", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0
