"""The console scripts' entry points: Ctrl-C while a command starts ends it with one line on
stderr and exit status 130.

Starting a command imports torch, which takes seconds; Python's default answer to Ctrl-C then is
a traceback of whatever was being imported. Each entry point here (``[project.scripts]`` in
pyproject.toml, and ``python -m certify``) first makes SIGINT end the process at once with one
line, then imports its command; :func:`run_command <certify.cli.common.run_command>` hands SIGINT
back to Python's default handler, so that from then on KeyboardInterrupt reaches the command's
own one-line report. Importing a command module changes no signal handler: that is the entry
points' doing alone. Only the standard library is imported here.
"""

from __future__ import annotations

import importlib
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


def start(module: str) -> int:
    """Catch Ctrl-C while starting, then import the command ``module`` and run its ``main``."""
    catch_interrupts_while_starting()
    return int(importlib.import_module(module).main())


def certify() -> int:
    """``certify``."""
    return start("certify.cli.certify")


def certify_predict() -> int:
    """``certify-predict``."""
    return start("certify.cli.predict")


def certify_merge() -> int:
    """``certify-merge``."""
    return start("certify.cli.merge")


def certify_plot() -> int:
    """``certify-plot``."""
    return start("certify.cli.plot")


def certify_attack() -> int:
    """``certify-attack``."""
    return start("certify.cli.attack")


def certify_audit() -> int:
    """``certify-audit``."""
    return start("certify.cli.audit")


def encoders_pretrain() -> int:
    """``encoders-pretrain``."""
    return start("certify.cli.pretrain")


def encoders_finetune() -> int:
    """``encoders-finetune``."""
    return start("certify.cli.finetune")
