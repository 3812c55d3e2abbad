"""Check exported graphs: numeric parity with the PyTorch modules (random inputs and inputs
recorded from a short streaming run) and a TensorRT compatibility lint (every op supported by
TensorRT's ONNX parser, opset <= 20, only the declared dynamic axes).

With --backend tensorrt: build engines' outputs are compared with ONNX Runtime per subgraph
(Polygraphy), which needs TensorRT and a GPU.

example:
  s3rt validate --model s3_480p/ [--weights s3.pth] [--frames clip/ --mask m.png]
"""

from __future__ import annotations

import argparse

from s3rt.cli.common import add_verbose
from s3rt.errors import S3rtError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="parity table + TensorRT op lint for an export", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="folder written by 's3rt export'")
    p.add_argument("--weights", metavar="W", help="the checkpoint the graphs were exported from (if any)")
    from s3rt.runtime.backends.registry import GRAPH_BACKENDS
    p.add_argument("--backend", default="onnxruntime", choices=GRAPH_BACKENDS,
                   help="what to validate against PyTorch/ONNX Runtime (default onnxruntime)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"), help="engine precision (tensorrt)")
    p.add_argument("--atol", type=float, help="max abs error allowed per output (default 1e-3; TensorRT fp16 "
                   "keeps its own, looser default and is judged by mask IoU)")
    p.add_argument("--frames", metavar="DIR", help="real frames for the recorded-inputs check (default: synthetic)")
    p.add_argument("--mask", metavar="PNG", help="first-frame mask for --frames")
    p.add_argument("--max-frames", type=int, default=8, help="frames to stream for recorded inputs (default 8)")
    p.add_argument("--reference-model", metavar="DIR",
                   help="tensorrt: plain export (standard ops) that ONNX Runtime compares against, needed when "
                        "--model was exported with --fused-attention-plugin (ORT cannot run the custom op)")
    from s3rt.cli.common import add_plugin_lib
    add_plugin_lib(p)
    p.add_argument("--no-lint", action="store_true", help="skip the TensorRT op lint")
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.backend == "tensorrt":
        from s3rt.runtime.backends.tensorrt.validate import validate_tensorrt
        extra = {"atol": args.atol} if args.atol is not None else {}
        if args.frames:
            frames, masks = _load_clip(args)
            extra.update(frames=frames, first_mask=masks[0])
        result = validate_tensorrt(args.model, precision=args.precision, plugin_libs=args.plugin_lib,
                                   reference_model_dir=args.reference_model, **extra)
        print(result.format() if hasattr(result, "format") else result)
        return 0 if result else 1
    from s3rt.export.validate import validate_model
    frames = masks = None
    if args.frames:
        frames, masks = _load_clip(args)
    atol = 1e-3 if args.atol is None else args.atol
    result = validate_model(args.model, weights=args.weights, atol=atol, frames=frames, masks=masks,
                            lint=not args.no_lint)
    print(result.table())
    for graph, report in result.lint.items():
        print(f"\nTensorRT lint {graph}: " + (report.format() if hasattr(report, "format") else str(report)))
    print(f"\nparity: {'OK' if result.parity_ok else 'FAILED'} (atol {atol:g}); "
          f"TensorRT lint: {'OK' if result.lint_ok else 'FAILED'}")
    return 0 if result else 1


def _load_clip(args: argparse.Namespace) -> tuple[list, list]:
    from s3rt.runtime.io.files import list_frames, read_frame, read_mask, resize_mask
    from s3rt.runtime.manifest import load_manifest
    if not args.mask:
        raise S3rtError("--frames needs --mask (the first frame's index mask)")
    man = load_manifest(args.model)
    files = list_frames(args.frames)[: args.max_frames]
    from PIL import Image
    import numpy as np
    frames = []
    for f in files:
        img = read_frame(f)
        if img.shape[:2] != (man.height, man.width):
            img = np.asarray(Image.fromarray(img).resize((man.width, man.height), Image.BILINEAR))
        frames.append(img)
    mask, _ = read_mask(args.mask)
    masks = [resize_mask(mask, (man.height, man.width))] + [None] * (len(frames) - 1)
    return frames, masks
