"""Train the tiny S3 on generated synthetic clips (CPU is enough; see training/RECIPE.md).

Resumable: checkpoints go to OUT/checkpoint.pt; rerun with --resume to continue. The loss
curve is OUT/loss_curve.png. --export writes the compact fp16 state dict at the end.

example:
  s3rt train --out train_runs/tiny --steps 2000 --export tiny_synthetic.pt
"""

from __future__ import annotations

import argparse

from s3rt.cli.common import add_verbose


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the tiny model on synthetic clips (resumable)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from s3rt.training.train import build_parser
    build_parser(p)
    add_verbose(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from s3rt.training.train import main
    return main(args=args)
