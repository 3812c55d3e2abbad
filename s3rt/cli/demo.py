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


def run(args: argparse.Namespace) -> int:
    from s3rt.training.demo import DemoOptions, run_demo

    print(run_demo(DemoOptions(out=Path(args.out), config=args.config, weights=args.weights,
                               random_weights=args.random_weights, clips=args.clips, frames=args.frames,
                               height=args.height, width=args.width, mem_every=args.mem_every)))
    return 0
