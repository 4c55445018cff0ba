"""The one convention of every command: one-line user errors with exit status 2, argparse types.

A user error (a bad flag, a missing or damaged file, a path that cannot be written, Ctrl-C) ends a
command with one line on stderr, ``<prog>: error: <what is wrong>``, and exit status 2 (130 for
Ctrl-C), never a traceback. The library reports bad input as ValueError, files as OSError; the
commands add :class:`UserError` for what only they can judge. Running out of memory is a user
error too: its line names the size flags the command has. Anything else is a bug and keeps its
traceback. With ``CERTIFY_DEBUG=1`` in the environment, a user error's traceback is printed
before its line (to see where in a user's own model an exception was raised).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from certify.cli.startup import INTERRUPTED, stop_catching_interrupts
from certify.torchrun import torchrun_place
from encoders.errors import one_line

if TYPE_CHECKING:
    from certify.runner import RunReport

USER_ERROR = 2


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2.

    A word that starts with ``-`` and then a digit or ``.digit`` is a value, never an option
    (argparse takes only plain numbers such as -1 so): ``--shard -1/2``, ``--linf-eps -1/255``
    and ``--normalize 0,0,0 -1,-1,-1`` reach their flag's check, which says what is wrong or
    accepts them where negative values are legal. No command has an option spelled so.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR, f"{self.prog}: error: {' '.join(message.split())}\n")


def run_command(
    prog: str,
    parser: argparse.ArgumentParser,
    body: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` and run a command's body under the one-line error convention.

    Returns:
        The body's exit status; 2 after a user error (a bad flag, UserError, ValueError, OSError),
        130 after Ctrl-C, 0 after --help.
    """
    try:
        stop_catching_interrupts()  # from here, Ctrl-C raises KeyboardInterrupt, reported below
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:  # --help, or a bad flag already reported on one line
            return int(stop.code or 0)
        return body(args)
    except (UserError, ValueError, OSError) as error:
        _debug_traceback()
        print(f"{prog}: error: {flags_for_arguments(one_line(error), parser)}", file=sys.stderr)
        return USER_ERROR
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        _debug_traceback()
        print(f"{prog}: error: out of memory ({one_line(error)[:200]}); "
              f"{_memory_advice(parser, argv)}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED


ARGUMENT_NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
"""How library messages name an argument of the call: ``pass `overwrite` ...``."""
RENAMED_ARGUMENTS = {"factory": "--model-factory"}
"""Library arguments whose flag is not named after them (``load_model(factory=...)``)."""


def flags_for_arguments(message: str, parser: argparse.ArgumentParser) -> str:
    """A library message as the command says it: each argument it names in backquotes
    (```out```) becomes the flag that sets it (``--out``, the first long spelling of the option
    whose ``dest`` is that name), or the bare name where no flag sets it."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        spellings = [spelling for spelling in action.option_strings if spelling.startswith("--")]
        if spellings:
            flags.setdefault(action.dest, spellings[0])
    for name, flag in RENAMED_ARGUMENTS.items():
        if flag in parser._option_string_actions:
            flags.setdefault(name, flag)
    return ARGUMENT_NAME.sub(lambda match: flags.get(match[1], match[1]), message)


MEMORY_FLAGS = ("--batch", "--batch-size", "--attack-batch", "--eot-samples", "--noise-copies",
                "--crop", "--resize")
"""The flags that set how much memory a command takes at once, named when it runs out."""


def _debug_traceback() -> None:
    if os.environ.get("CERTIFY_DEBUG", "") not in ("", "0"):
        traceback.print_exc()


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (the host's or a GPU's)."""
    if isinstance(error, (MemoryError, torch_out_of_memory())):
        return True
    message = str(error)
    return "can't allocate memory" in message or "out of memory" in message.lower()


def torch_out_of_memory() -> type[BaseException]:
    """torch.OutOfMemoryError where torch is imported (commands import it), else MemoryError."""
    torch = sys.modules.get("torch")
    return getattr(torch, "OutOfMemoryError", MemoryError) if torch else MemoryError


def _memory_advice(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> str:
    words = list(sys.argv[1:] if argv is None else argv)
    flags = [flag for flag in MEMORY_FLAGS if flag in parser._option_string_actions]
    given = [flag for flag in flags
             if any(word == flag or word.startswith(f"{flag}=") for word in words)]
    named = given or flags
    if not named:
        return "use smaller inputs or a machine with more memory"
    return "lower " + (", ".join(named[:-1]) + " or " if len(named) > 1 else "") + named[-1]


def is_main_process() -> bool:
    """False in the processes of a torchrun run other than the first (RANK > 0)."""
    return torchrun_place().rank == 0


def _argument(text: str, convert: Callable[[str], Any], valid: Callable[[Any], bool],
              expected: str) -> Any:
    try:
        value = convert(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    return _argument(text, float, lambda value: 0 < value < math.inf, "a finite number > 0")


def non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    return _argument(text, float, lambda value: 0 <= value < math.inf, "a finite number >= 0")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (underscores allowed, as in 100_000)."""
    return _argument(text, int, lambda value: value >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a seed)."""
    return _argument(text, int, lambda value: value >= 0, "an integer >= 0")


def probability(text: str) -> float:
    """argparse type: a float in the open interval (0, 1)."""
    return _argument(text, float, lambda value: 0 < value < 1, "a number in (0, 1)")


def epsilon(text: str) -> float:
    """argparse type: a finite number > 0 written as a decimal or a fraction such as 8/255
    (:func:`certify.attacks.pgd.parse_epsilon`)."""
    from certify.attacks.pgd import parse_epsilon

    try:
        return parse_epsilon(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number > 0 such as 0.5 or 8/255, got {text!r}") from None


def duration(text: str) -> float:
    """argparse type: a time span > 0 in seconds, or with a unit: 90s, 45m, 5.5h, 2d
    (:func:`certify.runner.parse_duration`)."""
    from certify.runner import parse_duration

    return _argument(text, parse_duration, lambda value: True,
                     "a duration > 0 such as 3600, 45m or 5.5h")


def add_time_limit(parser: argparse.ArgumentParser) -> None:
    """--time-limit, as every dataset command spells it."""
    parser.add_argument("--time-limit", type=duration, default=None,
                        help="stop after the image (or group of images) that reaches this much "
                             "wall time (seconds, or 45m, 5.5h, 2d); rerun the same command to "
                             "resume. SIGTERM also stops after the image at hand")


def file_path(text: str) -> Path:
    """argparse type: a path that names a file (not empty, not ending in a separator)."""
    if not text.strip() or text.endswith(os.sep):
        raise argparse.ArgumentTypeError(f"expected a file path, got {text!r}")
    return Path(text)


@contextlib.contextmanager
def progress_bar(description: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of images on stderr (none when ``quiet``), as the ``progress`` callback of
    :func:`certify.runner.run`: called with (images done, images in all)."""
    from tqdm import tqdm

    with tqdm(unit="img", disable=quiet, desc=description, file=sys.stderr) as bar:
        def show(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        yield show


def stopped_line(report: RunReport) -> str:
    """What a dataset command prints when its run stopped early (exit status 0, as training)."""
    return (f"stopped after image {report.done} of {report.total} ({report.stopped}); "
            f"{report.path} holds the run: rerun the same command to resume")
