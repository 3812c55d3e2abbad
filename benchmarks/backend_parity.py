"""Whole-clip parity of ONNX Runtime against the torch backend (same weights, same frames).

    python -m s3rt.benchmarks.backend_parity --config s3-r50 --weights W --frames DIR --mask PNG [--masks DIR]

Exports the graphs for the clip's size to a temporary folder, streams the clip through both
backends and prints max |dp| on frame 1 and over the clip and the argmax agreement: the
acceptance figures of the runtime (<= 1e-3, <= 2e-2, >= 99 %).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from s3rt.runtime.compare import frame_agreement     # the one comparator (also imported from here by `s3rt demo`)


def compare_backends(config: str, weights: str | None, frames: list[np.ndarray], masks: dict[int, np.ndarray],
                     *, seed: int = 0) -> dict:
    from s3rt.export.onnx_export import export_model
    from s3rt.runtime.backends.onnxruntime.backend import OnnxRuntimeBackend
    from s3rt.runtime.backends.pytorch.backend import TorchBackend
    from s3rt.runtime.tracker import Tracker

    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        manifest, _ = export_model(config, out_dir=tmp, height=h, width=w, weights=weights, seed=seed,
                                   check_parity=False)
        runs = {}
        for name, backend in (("torch", TorchBackend(config, weights=weights, seed=seed)),
                              ("onnxruntime", OnnxRuntimeBackend(tmp))):
            tracker = Tracker(backend, backend.tracker_settings(manifest.settings), max_short_side=None)
            runs[name] = [tracker.step(f, mask=masks.get(i), end=i == len(frames) - 1).probabilities
                          for i, f in enumerate(frames)]
    diffs, agree = frame_agreement(runs["torch"], runs["onnxruntime"])
    return {"config": config, "frames": len(frames), "size": [h, w], "frame1_max_abs": diffs[1] if len(diffs) > 1
            else diffs[0], "clip_max_abs": max(diffs), "min_argmax_agreement": min(agree),
            "mean_argmax_agreement": float(np.mean(agree))}


def main(argv: list[str] | None = None) -> int:
    from s3rt.runtime.io.files import list_frames, read_frame, read_mask

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--weights")
    p.add_argument("--frames", required=True)
    p.add_argument("--mask", required=True)
    p.add_argument("--masks", help="more masks named like their frames")
    args = p.parse_args(argv)
    files = list_frames(args.frames)
    frames = [read_frame(f) for f in files]
    masks = {0: read_mask(args.mask)[0]}
    if args.masks:
        for i, f in enumerate(files):
            extra = Path(args.masks) / f"{f.stem}.png"
            if i and extra.is_file():
                masks[i] = read_mask(extra)[0]
    r = compare_backends(args.config, args.weights, frames, masks)
    print(f"{r['config']} {r['size'][0]}x{r['size'][1]}, {r['frames']} frames: frame 1 max |dp| "
          f"{r['frame1_max_abs']:.2e}, clip max |dp| {r['clip_max_abs']:.2e}, argmax agreement min "
          f"{100 * r['min_argmax_agreement']:.3f} % / mean {100 * r['mean_argmax_agreement']:.3f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
