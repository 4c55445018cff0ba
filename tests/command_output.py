"""What the command tests read from a command's output."""

from __future__ import annotations


def one_line_error(capsys) -> str:
    """The single line a command wrote to stderr (there must be exactly one, no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]
