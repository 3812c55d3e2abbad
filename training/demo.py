"""The showcase of the trained tiny model: the whole job end to end on generated held-out clips.

`run_demo` generates held-out synthetic clips (textured, deforming objects with look-alike
distractors over a panning background) with their ground truth, exports the model to ONNX (with
a parity check), tracks every clip with the torch and ONNX Runtime backends from the first-frame
mask, compares the two, scores both against the ground truth (DAVIS J&F), and writes masks, an
overlay picture sheet, an overlay video and report.json / report.md into the output folder.
`s3rt demo` is its command line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "onnxruntime")     # compared side by side


@dataclass(frozen=True)
class DemoOptions:
    """out: output folder; weights None: the project's trained weights where the config has
    them (random_weights: seeded random instead); clips x frames at height x width; mem_every:
    memory frame every N frames (the trained weights learnt with every frame in memory)."""

    out: Path
    config: str = "tiny"
    weights: str | None = None
    random_weights: bool = False
    clips: int = 8
    frames: int = 30
    height: int = 96
    width: int = 160
    mem_every: int = 1


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def demo_weights(o: DemoOptions) -> tuple[str | None, str]:
    """-> (checkpoint path or None for random weights, a phrase for the report)."""
    from s3rt.training.trained import has_trained_weights, trained_weights
    if o.random_weights:
        return None, "seeded random (masks meaningless)"
    if o.weights:
        return o.weights, f"user checkpoint {o.weights}"
    if has_trained_weights(o.config):
        path = trained_weights(o.config)
        return str(path), f"trained by s3rt on synthetic clips ({path.name}, see training/RECIPE.md)"
    return None, f"seeded random (no trained weights ship for {o.config}; masks meaningless)"


def run_demo(o: DemoOptions, *, say: Callable[[str], None] = _stderr) -> str:
    """Run every step (progress lines go to `say`); writes the outputs and returns report.md's text."""
    from PIL import Image

    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends.registry import OnnxRuntimeOptions, TorchOptions, create_backend
    from s3rt.runtime.compare import frame_agreement
    from s3rt.runtime.evaluation.davis import evaluate_davis
    from s3rt.runtime.io.files import Frame, write_index_mask
    from s3rt.runtime.offline.pipeline import run_clip
    from s3rt.runtime.tracker import Tracker
    from s3rt.training.evaluate import held_out_clips
    from s3rt.training.pictures import overlay_sheet, overlay_video

    out = Path(o.out)
    weights, weights_text = demo_weights(o)
    say(f"[1/6] generating {o.clips} held-out {o.frames}-frame {o.height}x{o.width} clips")
    clips = held_out_clips(o.clips, num_frames=o.frames, height=o.height, width=o.width)
    for c in clips:
        (out / "clip" / "Annotations" / c.name).mkdir(parents=True, exist_ok=True)
        (out / "clip" / "JPEGImages" / c.name).mkdir(parents=True, exist_ok=True)
        for i, (f, m) in enumerate(zip(c.frames, c.masks)):
            Image.fromarray(f).save(out / "clip" / "JPEGImages" / c.name / f"{i:05d}.png")
            write_index_mask(out / "clip" / "Annotations" / c.name / f"{i:05d}.png", m, None)

    say(f"[2/6] exporting {o.config} to ONNX ({weights_text})")
    manifest, rows = export_model(o.config, out_dir=out / "model", height=o.height, width=o.width,
                                  weights=weights, mem_every=o.mem_every, progress=lambda m: say("      " + m))
    worst = max(r.max_abs for r in rows)

    options = {"torch": TorchOptions(o.config, weights=weights), "onnxruntime": OnnxRuntimeOptions(out / "model")}
    probs: dict[str, list] = {}
    labels: dict[str, dict[str, np.ndarray]] = {}
    fps: dict[str, float] = {}
    for i, name in enumerate(BACKENDS, 3):
        say(f"[{i}/6] tracking with the {name} backend")
        probs[name], labels[name], lat = [], {}, []
        with create_backend(options[name]) as backend:
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
        "config": o.config, "weights": weights_text,
        "clips": {"count": len(clips), "frames": o.frames, "size": [o.height, o.width],
                  "names": [c.name for c in clips]},
        "export_worst_abs_error": worst,
        "backends": {n: {"fps": fps[n], "J&F": s["J&F"], "J": s["J"]["mean"], "F": s["F"]["mean"]}
                     for n, s in scores.items()},
        "torch_vs_onnxruntime": {"max_abs_prob_diff": max(diffs), "min_argmax_agreement": min(agree),
                                 "mean_argmax_agreement": float(np.mean(agree))},
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["# s3rt demo report", "",
             f"- model: {o.config}, weights: {weights_text}",
             f"- data: {len(clips)} held-out generated clips of {o.frames} frames at {o.height}x{o.width} "
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
              f"- `overlay_sheet.png`: for each of the first {min(4, len(clips))} clips, the upper row is what the "
              "tracker (torch backend) segmented, the lower row the ground truth, at six frames from first to last; "
              "each object has its colour (DAVIS palette: 1 red, 2 green, 3 yellow). Uncoloured look-alike shapes "
              "are the distractors the model must not pick up.",
              f"- `{video.name}`: every clip played in turn, tracked masks on the left, ground truth on the right.",
              f"- masks: `masks_torch/`, `masks_onnxruntime/` (one folder per clip, palette PNGs); "
              "frames and ground truth: `clip/`; ONNX graphs: `model/`.", ""]
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text
