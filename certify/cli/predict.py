"""The ``certify-predict`` command: the smoothed classifier's prediction on a whole data set
(Cohen et al.'s predict.py), one row per image, resumable as ``certify``.

Example:
    certify-predict --sigma 0.25 --n 1000 --alpha 0.001
"""

from __future__ import annotations

import sys

from certify.cli.certify import build_parser, run
from certify.cli.common import run_command


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``certify-predict``."""
    return run_command("certify-predict", build_parser("certify-predict", certifying=False),
                       lambda args: run(args, "predict"), argv)


if __name__ == "__main__":
    sys.exit(main())
