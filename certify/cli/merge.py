"""The ``certify-merge`` command: join the parts of a run split with ``--shard i/K``.

Example:
    certify-merge results/run.tsv --shards 4
"""

from __future__ import annotations

import argparse
import sys

from certify.cli.common import OneLineParser, file_path, positive_int, run_command
from certify.shards import merge_parts


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="certify-merge",
                           description="Join the parts of a sharded run into one results file.")
    parser.add_argument("out", type=file_path,
                        help="the results file the shards were run with (--out)")
    parser.add_argument("--shards", type=positive_int, required=True,
                        help="K, the number of shards")
    return parser


def run(args: argparse.Namespace) -> int:
    rows = merge_parts(args.out, args.shards)
    print(f"certify-merge: {rows} rows -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify-merge``."""
    return run_command("certify-merge", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
