"""The whole job end to end on a generated clip, in one command.

Generates a short clip of moving objects with its first-frame mask and ground truth, exports
the model to ONNX (with a parity check), segments the clip with the torch and ONNX Runtime
backends, compares the two, scores both against the ground truth (J&F), and writes masks and
a short report. Without --weights the model has seeded random weights: the pipeline is real,
the masks (and J&F) are meaningless.

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
    p = sub.add_parser("demo", help="export + run + compare + report on a generated clip", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from s3rt.configs import list_configs
    p.add_argument("--out", default="s3rt_demo", metavar="DIR", help="output folder (default s3rt_demo)")
    p.add_argument("--config", default="s3-r50", choices=list_configs(), help="model variant (default s3-r50)")
    p.add_argument("--weights", metavar="W", help="checkpoint (optional)")
    p.add_argument("--frames", type=int, default=12, help="clip length (default 12)")
    p.add_argument("--height", type=int, default=192, help="clip height (default 192)")
    p.add_argument("--width", type=int, default=320, help="clip width (default 320)")
    p.add_argument("--objects", type=int, default=2, help="objects in the clip (default 2)")
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    from s3rt.benchmarks.backend_parity import frame_agreement
    from s3rt.benchmarks.davis_eval import evaluate_davis
    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends import make_backend
    from s3rt.runtime.io import Frame, write_index_mask
    from s3rt.runtime.pipeline import run_clip
    from s3rt.runtime.synthetic import make_clip
    from s3rt.runtime.tracker import Tracker

    out = Path(args.out)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    say(f"[1/5] generating a {args.frames}-frame {args.height}x{args.width} clip with {args.objects} objects")
    frames, masks = make_clip(args.frames, args.height, args.width, args.objects, seed=0)
    gt = out / "clip" / "Annotations" / "demo"
    img_dir = out / "clip" / "JPEGImages" / "demo"
    gt.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    from PIL import Image
    for i, (f, m) in enumerate(zip(frames, masks)):
        Image.fromarray(f).save(img_dir / f"{i:05d}.png")
        write_index_mask(gt / f"{i:05d}.png", m, None)

    say(f"[2/5] exporting {args.config} to ONNX")
    manifest, rows = export_model(args.config, out_dir=out / "model", height=args.height, width=args.width,
                                  weights=args.weights, progress=lambda m: say("      " + m))
    worst = max(r.max_abs for r in rows)

    results: dict[str, list] = {}
    reports = {}
    for i, name in enumerate(("torch", "onnxruntime"), 3):
        say(f"[{i}/5] segmenting with the {name} backend")
        backend = make_backend(name, config=args.config, weights=args.weights, model_dir=out / "model")
        kept: list = []
        with backend:
            tracker = Tracker(backend, manifest.settings, max_short_side=None)
            report = run_clip(tracker, [Frame(f"{k:05d}", f) for k, f in enumerate(frames)], first_mask=masks[0],
                              out_dir=out / f"masks_{name}" / "demo", save_probs=False,
                              on_result=lambda fr, res: kept.append(res.probabilities))
        results[name] = kept
        reports[name] = report.summary()
    diffs, agree = frame_agreement(results["torch"], results["onnxruntime"])

    say("[5/5] scoring against the generated ground truth (J&F)")
    scores = {name: evaluate_davis(out / f"masks_{name}", out / "clip" / "Annotations", progress=False)["J&F"]
              for name in results}
    summary = {
        "config": args.config, "weights": args.weights or "seeded random (masks meaningless)",
        "export_worst_abs_error": worst,
        "backends": {n: {"fps": r["fps"], "latency_ms_p50": r["latency_ms"]["p50"], "J&F": scores[n]}
                     for n, r in reports.items()},
        "torch_vs_onnxruntime": {"max_abs_prob_diff": max(diffs), "min_argmax_agreement": min(agree)},
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# s3rt demo report", "", f"- model: {args.config}, weights: {summary['weights']}",
             f"- clip: {args.frames} frames, {args.height}x{args.width}, {args.objects} objects (generated)",
             f"- ONNX export: 6 graphs, worst ONNX Runtime vs PyTorch error {worst:.2e}",
             f"- torch vs onnxruntime over the clip: max |dp| {max(diffs):.2e}, argmax agreement "
             f"{100 * min(agree):.2f}% (worst frame)"
             + ("; with random weights the objects' probabilities are nearly equal, so argmax agreement "
                "flips on near-ties: judge the probabilities" if not args.weights else ""), "",
             "| backend | FPS | p50 latency (ms) | J&F vs generated GT |", "|---|---|---|---|"]
    for n, b in summary["backends"].items():
        lines.append(f"| {n} | {b['fps']:.2f} | {b['latency_ms_p50']:.1f} | {b['J&F']:.3f} |")
    lines += ["", f"Masks: {out}/masks_torch/demo, {out}/masks_onnxruntime/demo; graphs: {out}/model", ""]
    (out / "report.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0
