"""Append-only, resumable results files in the tab-separated format of Cohen et al.'s certify.py.

A results file holds a header and one row per image, each row flushed and fsynced as it is made.
Beside it, ``<file>.run.json`` records the settings that produced it. Opening the same file again
with the same settings resumes after the last complete row (a torn last line, left by a killed
process, is dropped and redone, and so are rows that repeat another's key or are malformed);
opening it with other settings is refused unless the caller asks to overwrite. Nothing here ever
silently overwrites a results file, and nothing replaces what is not a regular file.

While open, a results file is locked (``fcntl.flock`` on ``<file>.lock``, which records the
holder's pid and is released when the holder closes the file or dies): a second writer is refused
instead of interleaving its rows with the first's. Writing, locking and the path check are those
of every output (:mod:`certify.files`).

Example:
    >>> with ResultsFile("out.tsv", ("idx", "label"), {"sigma": 0.25}) as results:
    ...     for idx in range(10):
    ...         if idx not in results.done:
    ...             results.append((idx, 3))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from certify.files import LockHeldError, path_problem, release_lock, take_lock, write_atomically

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


class ResultsLockedError(ResultsConflictError):
    """Another open :class:`ResultsFile`, in this process or another, is writing the file."""


def settings_path(path: Path) -> Path:
    """The file beside ``path`` that records the settings which produced it."""
    return path.with_name(path.name + ".run.json")


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings recorded beside the results file ``path`` (:func:`settings_path`).

    Raises:
        ResultsConflictError: naming the settings file, if it is missing, unreadable or not a
            JSON object.
    """
    recorded_path = settings_path(Path(path))
    try:
        recorded = json.loads(recorded_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # JSON and UTF-8 decoding errors are ValueErrors
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ResultsConflictError(
            f"{recorded_path} (the settings that made {Path(path).name}) is missing or "
            f"unreadable: {reason}"
        ) from None
    if not isinstance(recorded, dict):
        raise ResultsConflictError(f"{recorded_path} holds no settings (not a JSON object)")
    return recorded


def differing_settings(recorded: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """The keys of ``expected`` whose value in ``recorded`` (a results file's settings,
    :func:`read_settings`) is another one; a key it lacks reads as None.

    Numbers (int or float) are equal within a relative 1e-9, so a sigma recorded by one run
    matches the same sigma computed another way by another; a bool equals only itself (JSON's
    true is not 1); everything else must be equal.
    """
    def same(value: Any, wanted: Any) -> bool:
        if isinstance(value, bool) or isinstance(wanted, bool):  # JSON's true is not 1
            return value is wanted
        if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
            return math.isclose(value, wanted, rel_tol=1e-9)
        return bool(value == wanted)

    return [key for key, wanted in expected.items()
            if not same(recorded.get(key), wanted)]


OUTPUTS_KEY = "outputs"
"""The entry of a settings file that lists the files a run made beside its results file (such as
the figure of ``certify --plot``): a record of what was made, not a setting, so never compared;
``--overwrite`` removes exactly these and nothing else."""


def record_output(path: str | os.PathLike[str], made: Path) -> None:
    """Add ``made``, a file beside the results file ``path`` that this run wrote, to the files
    its settings record (:data:`OUTPUTS_KEY`), so that overwriting the run removes it.

    Raises:
        ResultsConflictError: if the settings file is missing or unreadable.
        ValueError: if ``made`` is not in the results file's folder.
    """
    path = Path(path)
    if made.parent.resolve() != path.parent.resolve():
        raise ValueError(f"{made} is not beside {path}")
    recorded = read_settings(path)
    outputs = [name for name in recorded.get(OUTPUTS_KEY, []) if isinstance(name, str)]
    if made.name not in outputs:
        recorded[OUTPUTS_KEY] = [*outputs, made.name]
        write_atomically(settings_path(path), json.dumps(recorded, indent=1) + "\n")


def _remove_recorded_outputs(path: Path) -> None:
    """Remove the regular files beside ``path`` that its settings record as made by its run."""
    try:
        outputs = read_settings(path).get(OUTPUTS_KEY, [])
    except ResultsConflictError:
        return
    for name in outputs if isinstance(outputs, list) else []:
        made = path.with_name(name) if isinstance(name, str) and name == Path(name).name else None
        if made is not None and made != path and made.is_file() and not made.is_symlink():
            made.unlink()


def check_results_path(path: Path) -> None:
    """Refuse a path that cannot hold a results file: a folder, something that is not a regular
    file (a device, a FIFO, a socket), or a path below a file.

    Raises:
        ResultsConflictError: naming the path and what is wrong.
    """
    problem = path_problem(path)
    if problem is None:
        return
    kind, parent = problem
    if kind == "folder":
        raise ResultsConflictError(f"{path} is a folder; name a results file such as "
                                   f"{path / 'run.tsv'}")
    if kind == "not a file":
        raise ResultsConflictError(f"{path} is not a regular file (a device, FIFO or socket); "
                                   "results are never written to it")
    raise ResultsConflictError(f"cannot create {path}: {parent} is a file, not a folder")


def _canonical(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, sort_keys=True))


class ResultsFile:
    """An append-only results file that resumes where an interrupted run stopped.

    Args:
        path: the results file (its folder is created if missing).
        columns: the header, in order; the first is ``idx``, an integer >= 0.
        settings: everything that determines the rows (model, data set, sigma, n, seed, ...);
            JSON-serialisable. A file made with other settings is refused.
        overwrite: replace an existing file made with other settings instead of refusing.
        key: the columns that name a row; on resuming, a row whose key an earlier row has (as
            two runs interleaving their rows would leave) is dropped.

    Attributes:
        done: the ``idx`` values (first column) of the complete rows already in the file.
        dropped: how many rows resuming dropped as repeated or malformed (a torn last line,
            the trace of a killed process, is not counted).

    Raises:
        ResultsConflictError: the file exists with other settings or another header and
            ``overwrite`` is false; or the path is a folder, not a regular file, or below a file.
        ResultsLockedError: another open ResultsFile is writing the file.
        OSError: the file cannot be created or written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[str],
        settings: dict[str, Any],
        overwrite: bool = False,
        key: Sequence[str] = ("idx",),
    ) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.settings = _canonical(settings)
        self.done: set[int] = set()
        self.dropped = 0
        self._key_positions = [self.columns.index(name) for name in key]
        check_results_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = take_lock(self.path)
        except LockHeldError as error:
            raise ResultsLockedError(
                f"{self.path} is in use by another run ({error.holder}); wait for it to finish "
                "or choose another `out`"
            ) from None
        try:
            if self.path.exists() and not overwrite:
                self._resume()
            else:
                self._create()
            self._handle = open(self.path, "a", encoding="utf-8")
        except BaseException:
            release_lock(self.path, self._lock)
            raise

    def _create(self) -> None:
        if self.path.exists():  # replaced: what its run made beside it no longer describes it
            _remove_recorded_outputs(self.path)
        write_atomically(settings_path(self.path), json.dumps(self.settings, indent=1) + "\n")
        write_atomically(self.path, "\t".join(self.columns) + "\n")

    def _resume(self) -> None:
        try:
            recorded = read_settings(self.path)
        except ResultsConflictError as error:
            raise ResultsConflictError(
                f"{self.path} exists but {error}; pass `overwrite` to replace it or choose "
                "another `out`"
            ) from None
        recorded.pop(OUTPUTS_KEY, None)
        if recorded != self.settings:
            changed = sorted(
                key for key in recorded.keys() | self.settings.keys()
                if recorded.get(key) != self.settings.get(key)
            )
            raise ResultsConflictError(
                f"{self.path} was made by a different command (differs in {', '.join(changed)}); "
                "pass `overwrite` to replace it or choose another `out`"
            )
        with open(self.path, "rb") as handle:
            data = handle.read()
        lines = data.split(b"\n")
        header = lines[0].decode("utf-8", errors="replace").split("\t")
        if tuple(header) != self.columns:
            raise ResultsConflictError(
                f"{self.path} has columns {header}, expected {list(self.columns)}; "
                "pass `overwrite` to replace it or choose another `out`"
            )
        # Complete rows end in a newline; anything after the last newline is a torn row.
        kept, keys = [], set()
        for line in lines[1:-1]:
            fields = line.decode("utf-8", errors="replace").split("\t")
            idx = fields[0]
            well_formed = len(fields) == len(self.columns) and idx.isascii() and idx.isdigit()
            key = tuple(fields[position] for position in self._key_positions) if well_formed else ()
            if not well_formed or key in keys:
                self.dropped += 1  # malformed, or a repeat: redone if its image is not done
                continue
            keys.add(key)
            kept.append(line)
            self.done.add(int(fields[0]))
        if self.dropped:
            write_atomically(self.path, b"\n".join([lines[0], *kept, b""]))
        elif lines[-1]:
            with open(self.path, "r+b") as handle:
                handle.truncate(len(data) - len(lines[-1]))
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
        """Close the file and release its lock; every appended row is already on disk."""
        if not self._handle.closed:
            self._handle.close()
            release_lock(self.path, self._lock)

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
