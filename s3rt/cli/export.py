"""Export S3 to six ONNX subgraphs (encoder, spatial_semantic, memory_readout, query_attention,
mask_decoder, mask_encoder) plus manifest.json.

Resolution and memory capacity are fixed per export (constants are precomputed for that size);
the object count is a dynamic axis (1..--max-objects). Each graph passes onnx.checker (full) and
shape inference, and is compared numerically with the PyTorch module in ONNX Runtime.

example:
  s3rt export --config s3-base --weights s3.pth --height 480 --width 854 --out s3_480p/
"""

from __future__ import annotations

import argparse
import sys

from s3rt.cli.common import add_long_term_args, add_verbose, long_term_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export ONNX subgraphs + manifest", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from s3rt.configs import list_configs
    p.add_argument("--config", required=True, choices=list_configs(), help="model variant")
    p.add_argument("--weights", metavar="W", help="checkpoint; without it seeded random weights are exported")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (default 0)")
    p.add_argument("--height", type=int, required=True, help="frame height the graphs are for (before padding)")
    p.add_argument("--width", type=int, required=True, help="frame width the graphs are for (before padding)")
    p.add_argument("--max-objects", type=int, default=8, help="largest object count (dynamic axis max, default 8)")
    p.add_argument("--memory-frames", type=int, default=5,
                   help="memory frames per object group incl. the permanent one (default 5)")
    p.add_argument("--max-buckets", type=int, default=4,
                   help="distinct frames on which objects may first appear (default 4)")
    p.add_argument("--top-k", type=int, default=30, help="memory readout top-k (default 30)")
    p.add_argument("--mem-every", type=int, default=5, help="memory write interval stored in the manifest (5)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20 (default 17)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--fused-attention-plugin", action="store_true",
                   help="emit the masked query attention as one s3rt::MaskedQueryGather node for the TensorRT "
                        "plugin (kernels/); ONNX Runtime cannot run that graph. Default: standard ops")
    add_long_term_args(p)
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from s3rt.export.onnx_export import export_model

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    _, rows = export_model(args.config, out_dir=args.out, height=args.height, width=args.width, weights=args.weights,
                           seed=args.seed, max_objects=args.max_objects, memory_frames=args.memory_frames,
                           max_buckets=args.max_buckets, top_k=args.top_k, mem_every=args.mem_every,
                           opset=args.opset, check_parity=not args.no_parity, progress=say,
                           fused_attention_node=args.fused_attention_plugin,
                           long_term=long_term_settings(args))
    if rows:
        worst = max(rows, key=lambda r: r.max_abs)
        print(f"ONNX Runtime vs PyTorch: worst max abs error {worst.max_abs:.2e} ({worst.graph}.{worst.output})")
    if args.weights is None:
        print("note: exported seeded random weights (no --weights): outputs are meaningless", file=sys.stderr)
    return 0
