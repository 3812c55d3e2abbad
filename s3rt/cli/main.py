"""s3rt: export, build, validate, run, benchmark and evaluate the S3 video object segmenter.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``
and ``run(args) -> int``. An S3rtError prints one line and exits 1 (full traceback with -v).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from s3rt import __version__
from s3rt.errors import S3rtError

SUBCOMMANDS = ("run", "export", "validate", "build", "bench", "eval", "demo", "train", "serve", "stream", "replay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s3rt", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 's3rt <command> --help' for the options of one command.")
    parser.add_argument("--version", action="version", version=f"s3rt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"s3rt.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"s3rt.cli.{name}":
                continue  # subcommand not shipped in this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except S3rtError as exc:
        if verbose:
            raise
        print(f"s3rt {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
