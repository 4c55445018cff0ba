"""What the command and runner tests read from a command's output and its results file, and the
fake clock they stop runs with."""

from __future__ import annotations

from pathlib import Path

from certify.results import read_rows


def one_line_error(capsys) -> str:
    """The single line a command wrote to stderr (there must be exactly one, no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


def rows_but_time(path: Path) -> list[dict[str, str]]:
    """The rows of a results file without their ``time`` column (which no rerun repeats)."""
    return [{key: value for key, value in row.items() if key != "time"}
            for row in read_rows(path)]


class StepClock:
    """A fake monotonic clock that advances one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now
