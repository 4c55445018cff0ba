"""Splitting a certification run over processes or machines, and joining the parts.

Shard i of K takes every K-th selected image starting at position i and writes its own part file,
``<out>.part<i>of<K>``, and on finishing a marker ``<part>.complete`` with its row count. Joining
checks that every part is complete and was made by the same settings, then writes the rows in the
order of a single-process run; with a seed per image the result equals a single-process run's
file in every column but ``time``.

Example:
    certify --sigma 0.25 --n 100000 --shard 0/2 --out run.tsv   # on one machine
    certify --sigma 0.25 --n 100000 --shard 1/2 --out run.tsv   # on another
    certify-merge run.tsv --shards 2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from certify.results import ResultsConflictError, settings_path, write_atomically


def part_path(out: Path, shard: int, num_shards: int) -> Path:
    """The part file that shard ``shard`` of ``num_shards`` writes for the results file ``out``."""
    return out.with_name(f"{out.name}.part{shard}of{num_shards}")


def completion_path(part: Path) -> Path:
    """The marker a shard writes once all of its images are done."""
    return part.with_name(part.name + ".complete")


def mark_complete(part: Path, rows: int) -> None:
    """Record that ``part`` holds all ``rows`` rows of its shard."""
    write_atomically(completion_path(part), json.dumps({"rows": rows}) + "\n")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse 'i/K' with 0 <= i < K.

    Raises:
        ValueError: naming --shard, for anything else.
    """
    try:
        shard, num_shards = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/K, e.g. 0/4, got {text!r}") from None
    if not 0 <= shard < num_shards:
        raise ValueError(f"--shard i/K needs 0 <= i < K, got {text!r}")
    return shard, num_shards


def merge_parts(out: Path, num_shards: int) -> int:
    """Join the complete parts of ``out`` into ``out``, rows in single-process order.

    Joining again is a no-op when ``out`` already holds exactly the joined parts.

    Returns:
        The number of rows in ``out``.

    Raises:
        ValueError: a part is missing or incomplete, parts disagree on their settings or header,
            or ``out`` already exists with other content.
    """
    header: str | None = None
    settings: dict[str, Any] | None = None
    rows: list[tuple[int, str]] = []
    for shard in range(num_shards):
        part = part_path(out, shard, num_shards)
        marker = completion_path(part)
        if not marker.exists():
            raise ValueError(f"{part} is missing or unfinished: rerun shard {shard}/{num_shards}")
        recorded = json.loads(settings_path(part).read_text(encoding="utf-8"))
        if recorded.pop("shard") != [shard, num_shards]:
            raise ValueError(f"{part} was written by another shard than {shard}/{num_shards}")
        lines = part.read_text(encoding="utf-8").splitlines()
        if header is None:
            header, settings = lines[0], recorded
        elif lines[0] != header or recorded != settings:
            raise ValueError(f"{part} was made by other settings than the part of shard 0")
        expected = json.loads(marker.read_text(encoding="utf-8"))["rows"]
        if len(lines) - 1 != expected:
            raise ValueError(f"{part} holds {len(lines) - 1} rows, its marker says {expected}")
        rows.extend((int(line.split("\t", 1)[0]), line) for line in lines[1:])
    assert header is not None and settings is not None
    rows.sort()
    joined = "\n".join([header, *(line for _, line in rows)]) + "\n"
    if out.exists():
        if out.read_text(encoding="utf-8") == joined:
            return len(rows)
        raise ResultsConflictError(f"{out} already exists; remove it or merge into another path")
    write_atomically(settings_path(out), json.dumps(settings, indent=1) + "\n")
    write_atomically(out, joined)
    return len(rows)
