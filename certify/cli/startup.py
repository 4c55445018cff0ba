"""Ctrl-C while a command starts ends it with one line on stderr and exit status 130.

Starting a command imports torch, which takes seconds; Python's default answer to Ctrl-C then is
a traceback of whatever was being imported. Importing :mod:`certify.cli` (before any command
imports torch) makes SIGINT end the process at once with one line; :func:`run_command
<certify.cli.common.run_command>` hands SIGINT back to Python's default handler, so that from
then on KeyboardInterrupt reaches the command's own one-line report. Only the standard library
is imported here.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn

INTERRUPTED = 130


def interrupted_while_starting(signum: int, frame: FrameType | None) -> NoReturn:
    """The SIGINT handler while a command starts: one line, exit status 130."""
    name = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    program = "certify" if name in ("", "__main__", "-c", "-m") else name
    print(f"{program}: interrupted while starting; nothing was written", file=sys.stderr)
    raise SystemExit(INTERRUPTED)


def catch_interrupts_while_starting() -> None:
    """Install :func:`interrupted_while_starting`, unless someone installed their own handler."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, interrupted_while_starting)


def stop_catching_interrupts() -> None:
    """Give SIGINT back to Python's default handler (KeyboardInterrupt)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is interrupted_while_starting):
        signal.signal(signal.SIGINT, signal.default_int_handler)
