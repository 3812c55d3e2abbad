"""Score DAVIS-2017 semi-supervised predictions: J (region), F (boundary) and J&F.

Numbers equal those of the official davis2017-evaluation tool: objects are ids 1..N with N the
largest id in the first ground-truth frame, the first and the last frame are not scored, void
(255) counts as background, F uses boundaries dilated by ceil(0.008 x image diagonal) pixels.

Both folders hold one sub-folder per sequence with one palette PNG per frame (00000.png, ...);
a prediction PNG is needed for every ground-truth frame except the first and the last.

  s3rt eval --pred results/ --gt DAVIS/Annotations/480p
  s3rt eval --pred results/ --gt DAVIS/Annotations/480p --sequences bike-packing,blackswan --json jf.json

Prints a markdown table (global J&F, J and F mean/recall/decay, then per-sequence means) and,
with --json, writes all numbers including per-object means (schema: s3rt.runtime.evaluation.davis).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from s3rt.cli.common import add_verbose
from s3rt.errors import InputError

log = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="DAVIS-2017 J&F of predicted masks against ground truth",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, metavar="DIR",
                        help="predictions: DIR/<sequence>/<frame>.png")
    parser.add_argument("--gt", required=True, metavar="DIR",
                        help="ground truth, e.g. DAVIS/Annotations/480p: DIR/<sequence>/<frame>.png")
    parser.add_argument("--sequences", metavar="A,B",
                        help="comma-separated sequences to score (default: every sequence folder in --gt)")
    parser.add_argument("--json", metavar="OUT", help="also write all results as JSON to OUT")
    add_verbose(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from s3rt.runtime.evaluation.davis import evaluate_davis, format_table

    sequences = None
    if args.sequences is not None:
        sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
        if not sequences:
            raise InputError("--sequences is empty")
    res = evaluate_davis(args.pred, args.gt, sequences=sequences, progress=True)
    print(format_table(res))
    if args.json:
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=2) + "\n")
        except OSError as exc:
            raise InputError(f"cannot write --json {out}: {exc}") from exc
        log.info("wrote %s", out)
    return 0
