"""Export S3 to six ONNX subgraphs (encoder, spatial_semantic, memory_readout, query_attention,
mask_decoder, mask_encoder) plus manifest.json.

Resolution and memory capacity are fixed per export (constants are precomputed for that size);
the object count is a dynamic axis (1..--max-objects). Each graph passes onnx.checker (full) and
shape inference, and is compared numerically with the PyTorch module in ONNX Runtime.

With --weights and no --config the config is detected from the checkpoint (--config auto).
Loop settings (--mem-every, --top-k, --memory-frames) default to the model's own: its family's
evaluation defaults, or what the weights carry in a <stem>.inference.json sidecar; the manifest
records the values used and where each came from, and run/serve/replay/the ROS node use them.

examples:
  s3rt export --config s3-base --weights s3.pth --height 480 --width 854 --out s3_480p/
  s3rt export --weights cutie-base-mega.pth --height 480 --width 854 --out cutie_480p/
"""

from __future__ import annotations

import argparse
import sys

from s3rt.cli.common import add_long_term_args, add_verbose, long_term_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export ONNX subgraphs + manifest", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from s3rt.configs import list_configs
    p.add_argument("--config", choices=[*list_configs(), "auto"],
                   help="model variant; 'auto' (the default with --weights) detects it from the checkpoint")
    p.add_argument("--weights", metavar="W", help="checkpoint; without it seeded random weights are exported")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights (default 0)")
    p.add_argument("--height", type=int, required=True, help="frame height the graphs are for (before padding)")
    p.add_argument("--width", type=int, required=True, help="frame width the graphs are for (before padding)")
    p.add_argument("--max-objects", type=int, default=8, help="largest object count (dynamic axis max, default 8)")
    p.add_argument("--memory-frames", type=int,
                   help="memory frames per object group incl. the permanent one (default: the model's, 5)")
    p.add_argument("--max-buckets", type=int, default=4,
                   help="distinct frames on which objects may first appear (default 4)")
    p.add_argument("--top-k", type=int, help="memory readout top-k (default: the model's, 30)")
    p.add_argument("--mem-every", type=int, help="memory write interval stored in the manifest (default: the "
                   "model's: 5, or what the weights carry)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17..20 (default 17)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--fused-attention-plugin", action="store_true",
                   help="emit the masked query attention as one s3rt::MaskedQueryGather node for the TensorRT "
                        "plugin (kernels/); ONNX Runtime cannot run that graph. S3 configs only (DQ_CA): Cutie's "
                        "read-from-pixel layer is a standard masked attention. Default: standard ops")
    add_long_term_args(p)
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from s3rt.errors import ConfigError
    from s3rt.export.onnx_export import export_model

    if args.config is None and args.weights is None:
        raise ConfigError("choose a model: --config NAME, or --weights W (config detected from the checkpoint)")

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
