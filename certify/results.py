"""Append-only, resumable results files in the tab-separated format of Cohen et al.'s certify.py.

A results file holds a header and one row per image, each row flushed and fsynced as it is made.
Beside it, ``<file>.run.json`` records the settings that produced it. Opening the same file again
with the same settings resumes after the last complete row (a torn last line, left by a killed
process, is dropped and redone); opening it with other settings is refused unless the caller asks
to overwrite. Nothing here ever silently overwrites a results file.

Example:
    >>> with ResultsFile("out.tsv", ("idx", "label"), {"sigma": 0.25}) as results:
    ...     for idx in range(10):
    ...         if idx not in results.done:
    ...             results.append((idx, 3))
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

COHEN_CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
"""The columns of Cohen et al.'s certify.py, which every certify results file starts with."""

COHEN_PREDICT_COLUMNS = ("idx", "label", "predict", "correct", "time")
"""The columns of Cohen et al.'s predict.py."""


def read_table(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the rows of a tab-separated results file: the one reader of the format.

    Files of Cohen et al.'s scripts and of our commands read alike; blank lines are skipped and a
    byte-order mark is tolerated.

    Returns:
        (header, rows): the column names, and (line number, fields) for each row.

    Raises:
        ValueError: one line naming the file, if it is missing, unreadable, empty, not
            tab-separated, or has a row whose number of fields differs from the header's.
    """
    try:
        with open(path, encoding="utf-8-sig") as file:
            lines = [line.rstrip("\r\n") for line in file]
        numbered = [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]
        if not numbered:
            raise ValueError("the file is empty; expected a tab-separated header")
        header = numbered[0][1].split("\t")
        if len(header) == 1:
            raise ValueError(f"the header {numbered[0][1]!r} is not tab-separated")
        rows = []
        for number, line in numbered[1:]:
            fields = line.split("\t")
            if len(fields) != len(header):
                raise ValueError(f"line {number} has {len(fields)} tab-separated fields but the "
                                 f"header {len(header)}")
            rows.append((number, fields))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ValueError(f"results file {os.fspath(path)}: {reason}") from error
    return header, rows


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a results file by column name (see :func:`read_table`)."""
    header, rows = read_table(path)
    return [dict(zip(header, fields)) for _, fields in rows]


class ResultsConflictError(ValueError):
    """An existing results file was made by other settings, or is not a results file."""


def settings_path(path: Path) -> Path:
    """The file beside ``path`` that records the settings which produced it."""
    return path.with_name(path.name + ".run.json")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a torn file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _canonical(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, sort_keys=True))


class ResultsFile:
    """An append-only results file that resumes where an interrupted run stopped.

    Args:
        path: the results file (its folder is created if missing).
        columns: the header, in order.
        settings: everything that determines the rows (model, data set, sigma, n, seed, ...);
            JSON-serialisable. A file made with other settings is refused.
        overwrite: replace an existing file made with other settings instead of refusing.

    Attributes:
        done: the ``idx`` values (first column) of the complete rows already in the file.

    Raises:
        ResultsConflictError: the file exists with other settings or another header and
            ``overwrite`` is false.
        OSError: the file cannot be created or written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str],
        settings: dict[str, Any],
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.settings = _canonical(settings)
        self.done: set[int] = set()
        if self.path.exists() and not overwrite:
            self._resume()
        else:
            self._create()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(settings_path(self.path), json.dumps(self.settings, indent=1) + "\n")
        write_atomically(self.path, "\t".join(self.columns) + "\n")

    def _resume(self) -> None:
        recorded_path = settings_path(self.path)
        try:
            recorded = json.loads(recorded_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ResultsConflictError(
                f"{self.path} exists but {recorded_path.name} (the settings that made it) is "
                "missing or unreadable; pass --overwrite to replace it or choose another --out"
            ) from None
        if recorded != self.settings:
            changed = sorted(
                key for key in recorded.keys() | self.settings.keys()
                if recorded.get(key) != self.settings.get(key)
            )
            raise ResultsConflictError(
                f"{self.path} was made by a different command (differs in {', '.join(changed)}); "
                "pass --overwrite to replace it or choose another --out"
            )
        with open(self.path, "rb") as handle:
            data = handle.read()
        lines = data.split(b"\n")
        header = lines[0].decode("utf-8", errors="replace").split("\t")
        if tuple(header) != self.columns:
            raise ResultsConflictError(
                f"{self.path} has columns {header}, expected {list(self.columns)}; "
                "pass --overwrite to replace it or choose another --out"
            )
        # Complete rows end in a newline; anything after the last newline is a torn row.
        complete = lines[1:-1]
        kept_bytes = len(data) - len(lines[-1])
        for number, line in enumerate(complete):
            fields = line.decode("utf-8", errors="replace").split("\t")
            if len(fields) != len(self.columns) or not fields[0].lstrip("-").isdigit():
                # A damaged row: keep everything before it, redo it and what follows.
                kept_bytes = len(lines[0]) + 1 + sum(len(row) + 1 for row in complete[:number])
                break
            self.done.add(int(fields[0]))
        if kept_bytes != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(kept_bytes)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, row: Sequence[object]) -> None:
        """Write one row (values in column order), flushed and fsynced before returning.

        Raises:
            ValueError: if the row does not have one value per column.
        """
        if len(row) != len(self.columns):
            raise ValueError(f"row must have {len(self.columns)} values, got {len(row)}")
        self._handle.write("\t".join(str(value) for value in row) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(int(row[0]))  # type: ignore[call-overload]

    def close(self) -> None:
        """Close the file; every appended row is already on disk."""
        self._handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
