"""The user errors of encoders: ValueError subclasses with one-line messages, so a CLI can catch
ValueError and exit 2."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, of another format, or holds arbitrary pickled objects."""


class DatasetError(ValueError):
    """A data set is missing or damaged; the message says what to put where."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(error).split()) or type(error).__name__
