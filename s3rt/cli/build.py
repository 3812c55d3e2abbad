"""Build TensorRT engines for an exported model, on the machine (GPU) that will run them.

Reads the ONNX export written by 's3rt export' (manifest.json + six graphs), builds one engine per
graph with an optimisation profile for 1..max_objects objects, and writes DIR/engines/<graph>.engine
plus engine_manifest.json (TensorRT version, GPU, compute capability, precision, ONNX hashes).
Engines only run with the same TensorRT version on the same GPU model: rebuild after upgrading
JetPack/TensorRT or moving to another GPU.

  s3rt build --model exports/s3-base-480p
  s3rt build --model exports/s3-base-480p --precision fp16 --timing-cache ~/.cache/s3rt/trt.cache
  s3rt build --model exports/s3-base-480p --precision fp16 --deform-plugin --workspace 1024

fp16 keeps normalisation statistics, the memory readout (affinity, top-k, softmax), the sensory
update, the object summariser and the soft aggregation in fp32 (see s3rt.export.tensorrt.build).
Needs the 'tensorrt' extra (pip install "s3rt[tensorrt]"; on Jetson, JetPack's python3-libnvinfer).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from s3rt.cli.common import add_verbose

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build", help="build TensorRT engines from an ONNX export",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, metavar="DIR", help="folder written by 's3rt export'")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="engine precision (default fp32; fp16 keeps fp32 islands)")
    parser.add_argument("--workspace", type=int, default=2048, metavar="MiB",
                        help="builder workspace limit in MiB (default 2048; lower it on 8 GB Jetsons)")
    parser.add_argument("--timing-cache", metavar="FILE",
                        help="TensorRT timing cache to load, extend and save (speeds up rebuilds)")
    parser.add_argument("--max-objects", type=int, metavar="N",
                        help="largest object count the engines accept (default and upper bound: the export's)")
    parser.add_argument("--out", metavar="DIR", help="engine folder (default MODEL/engines)")
    parser.add_argument("--fp16-mode", choices=("typed", "constraints"), default="typed",
                        help="how fp32 islands are kept in fp16 builds: 'typed' (ONNX casts, strongly typed "
                             "network; default, required on TensorRT >= 11) or 'constraints' (TensorRT 10 layer "
                             "precisions)")
    parser.add_argument("--deform-plugin", action="store_true",
                        help="use TensorRT's MultiscaleDeformableAttnPlugin_TRT for the ViT adapter's deformable "
                             "attention instead of GridSample")
    parser.add_argument("--device", type=int, default=0, metavar="N", help="CUDA device index (default 0)")
    from s3rt.cli.common import add_plugin_lib
    add_plugin_lib(parser)
    add_verbose(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from s3rt.export.tensorrt.build import build_engines

    manifest = build_engines(
        Path(args.model), precision=args.precision, workspace_mib=args.workspace,
        timing_cache=args.timing_cache, max_objects=args.max_objects, out_dir=args.out, progress=True,
        fp16_mode=args.fp16_mode, device=args.device, deform_plugin=args.deform_plugin,
        verbose=getattr(args, "verbose", False), plugin_libs=args.plugin_lib)
    print(f"engines: {manifest.root} ({manifest.precision}, {manifest.machine.describe()})")
    return 0
