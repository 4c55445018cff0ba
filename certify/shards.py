"""Splitting a certification run over processes or machines, and joining the parts.

Shard i of K takes every K-th selected image starting at position i and writes its own part file,
``<out>.part<i>of<K>``, and on finishing a marker ``<part>.complete`` with the size of the data
set (a shard that starts removes its marker first, so a marker never outlives the run that made
it). Joining checks that every part is complete, was made by the same settings and holds exactly
the images its shard selects, each once, then writes the rows in the order of a single-process
run; with a seed per image the result equals a single-process run's file in every column but
``time``.

Example:
    certify --sigma 0.25 --n 100000 --shard 0/2 --out run.tsv   # on one machine
    certify --sigma 0.25 --n 100000 --shard 1/2 --out run.tsv   # on another
    certify-merge run.tsv --shards 2
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from certify.files import write_atomically
from certify.results import (
    ResultsConflictError,
    check_results_path,
    read_settings,
    read_table,
    settings_path,
)
from certify.selection import selected_indices


def part_path(out: Path, shard: int, num_shards: int) -> Path:
    """The part file that shard ``shard`` of ``num_shards`` writes for the results file ``out``."""
    return out.with_name(f"{out.name}.part{shard}of{num_shards}")


def completion_path(part: Path) -> Path:
    """The marker a shard writes once all of its images are done."""
    return part.with_name(part.name + ".complete")


def mark_complete(part: Path, dataset_size: int) -> None:
    """Record that ``part`` holds every image its shard selects from ``dataset_size`` images."""
    write_atomically(completion_path(part), json.dumps({"dataset_size": dataset_size}) + "\n")


def merge_parts(out: Path, num_shards: int) -> int:
    """Join the complete parts of ``out`` into ``out``, rows in single-process order.

    Joining again is a no-op when ``out`` already holds exactly the joined parts.

    Returns:
        The number of rows in ``out``.

    Raises:
        ValueError: naming the file, if a part is missing, incomplete or malformed, lacks an
            image its shard selects or holds one twice or from outside its shard, parts disagree
            on their settings or header, or ``out`` already exists with other content.
    """
    check_results_path(out)
    header: list[str] | None = None
    settings: dict[str, Any] | None = None
    rows: list[tuple[int, str]] = []
    for shard in range(num_shards):
        part = part_path(out, shard, num_shards)
        rerun = f"rerun shard {shard}/{num_shards}"
        marker = completion_path(part)
        if not marker.exists():
            raise ValueError(f"{part} is missing or unfinished: {rerun}")
        dataset_size = _read_marker(marker, rerun)
        recorded = read_settings(part)
        if recorded.pop("shard", None) != [shard, num_shards]:
            raise ValueError(f"{settings_path(part)} does not record shard {shard}/{num_shards}: "
                             f"{rerun}")
        part_header, part_rows = read_table(part)
        if header is None:
            header, settings = part_header, recorded
        elif part_header != header or recorded != settings:
            raise ValueError(f"{part} was made by other settings than the part of shard 0")
        indices = _indices_of(part, part_rows)
        _check_selection(part, indices, _selection(recorded, part, dataset_size, rerun)[
            shard::num_shards], rerun)
        rows.extend((idx, "\t".join(fields)) for idx, (_, fields) in zip(indices, part_rows))
    assert header is not None and settings is not None
    rows.sort()
    joined = "\n".join(["\t".join(header), *(line for _, line in rows)]) + "\n"
    if out.exists():
        if out.read_text(encoding="utf-8") == joined:
            return len(rows)
        raise ResultsConflictError(f"{out} already exists; remove it or merge into another path")
    write_atomically(settings_path(out), json.dumps(settings, indent=1) + "\n")
    write_atomically(out, joined)
    return len(rows)


def _read_marker(marker: Path, rerun: str) -> int:
    """The data set size a shard's completion marker records."""
    try:
        size = json.loads(marker.read_text(encoding="utf-8"))["dataset_size"]
    except (OSError, ValueError, TypeError, KeyError):
        size = None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{marker} is malformed (it must record the dataset_size): {rerun}")
    return size


def _selection(settings: dict[str, Any], part: Path, dataset_size: int, rerun: str) -> list[int]:
    """Every image index the run selects, from the skip and max its settings record."""
    skip, stop = settings.get("skip"), settings.get("max")
    if not (isinstance(skip, int) and _is_count(skip) and (stop is None or _is_count(stop))):
        raise ValueError(f"{settings_path(part)} records no valid skip and max: {rerun}")
    return selected_indices(dataset_size, skip, stop)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _indices_of(part: Path, rows: list[tuple[int, list[str]]]) -> list[int]:
    try:
        return [int(fields[0]) for _, fields in rows]
    except ValueError:
        raise ValueError(f"{part} has a row whose idx is not an integer") from None


def _check_selection(part: Path, indices: list[int], expected: list[int], rerun: str) -> None:
    """Refuse a part that lacks an image of its shard, or holds one twice or from elsewhere."""
    seen: set[int] = set()
    for idx in indices:
        if idx in seen:
            raise ValueError(f"{part} holds image {idx} twice: {rerun}")
        seen.add(idx)
    missing = sorted(set(expected) - seen)
    if missing:
        raise ValueError(f"{part} lacks {len(missing)} of the images its shard selects, such as "
                         f"{', '.join(map(str, missing[:5]))}: {rerun}")
    foreign = sorted(seen - set(expected))
    if foreign:
        raise ValueError(f"{part} holds images its shard does not select, such as "
                         f"{', '.join(map(str, foreign[:5]))}: {rerun}")
