"""Results files: append-only, resumable, never silently overwritten; shards join in order."""

from __future__ import annotations

import json

import pytest

from certify.cli.certify import parse_shard
from certify.results import ResultsConflictError, ResultsFile, differing_settings, settings_path
from certify.shards import mark_complete, merge_parts, part_path

COLUMNS = ("idx", "label", "value")
SETTINGS = {"sigma": 0.25, "n": 100}


def test_rows_are_written_and_resumed(tmp_path) -> None:
    path = tmp_path / "sub" / "run.tsv"
    with ResultsFile(path, COLUMNS, SETTINGS) as results:
        assert results.done == set()
        results.append((0, 3, "a"))
        results.append((5, 1, "b"))
        # Each row is on disk as soon as append returns.
        assert path.read_text() == "idx\tlabel\tvalue\n0\t3\ta\n5\t1\tb\n"
    with ResultsFile(path, COLUMNS, dict(SETTINGS)) as results:
        assert results.done == {0, 5}
        results.append((10, 2, "c"))
    assert path.read_text().splitlines()[-1] == "10\t2\tc"
    assert json.loads(settings_path(path).read_text()) == SETTINGS


def test_a_torn_last_line_is_dropped_and_redone(tmp_path) -> None:
    path = tmp_path / "run.tsv"
    with ResultsFile(path, COLUMNS, SETTINGS) as results:
        results.append((0, 3, "a"))
    with open(path, "a") as handle:
        handle.write("5\t1")  # a process killed mid-row
    with ResultsFile(path, COLUMNS, SETTINGS) as results:
        assert results.done == {0}
        results.append((5, 1, "b"))
    assert path.read_text() == "idx\tlabel\tvalue\n0\t3\ta\n5\t1\tb\n"


def test_a_damaged_row_is_dropped_and_redone_and_the_rows_after_it_kept(tmp_path) -> None:
    path = tmp_path / "run.tsv"
    path.write_text("idx\tlabel\tvalue\n0\t3\ta\n5\t1\n10\t2\tc\n")
    settings_path(path).write_text(json.dumps(SETTINGS))
    with ResultsFile(path, COLUMNS, SETTINGS) as results:
        assert results.done == {0, 10} and results.dropped == 1
    assert path.read_text() == "idx\tlabel\tvalue\n0\t3\ta\n10\t2\tc\n"


@pytest.mark.parametrize("other", [{"sigma": 0.5, "n": 100}, {"sigma": 0.25}])
def test_other_settings_are_refused_and_the_file_kept(tmp_path, other) -> None:
    path = tmp_path / "run.tsv"
    with ResultsFile(path, COLUMNS, SETTINGS) as results:
        results.append((0, 3, "a"))
    before = path.read_bytes()
    with pytest.raises(ResultsConflictError, match="`overwrite`"):
        ResultsFile(path, COLUMNS, other)
    with pytest.raises(ResultsConflictError, match="columns"):
        ResultsFile(path, ("idx", "other", "value"), SETTINGS)
    assert path.read_bytes() == before
    with ResultsFile(path, COLUMNS, other, overwrite=True) as results:
        assert results.done == set()
    assert path.read_text() == "idx\tlabel\tvalue\n"


def test_a_file_without_its_settings_is_not_touched(tmp_path) -> None:
    path = tmp_path / "foreign.tsv"
    path.write_text("something precious\n")
    with pytest.raises(ResultsConflictError, match="missing"):
        ResultsFile(path, COLUMNS, SETTINGS)
    assert path.read_text() == "something precious\n"


def test_rows_must_match_the_header(tmp_path) -> None:
    with ResultsFile(tmp_path / "run.tsv", COLUMNS, SETTINGS) as results:
        with pytest.raises(ValueError, match="row"):
            results.append((1, 2))


SHARDED = {**SETTINGS, "skip": 10, "max": None}  # every 10th image


def write_shards(out, rows_by_shard, dataset_size, settings=SHARDED):
    for shard, rows in enumerate(rows_by_shard):
        part = part_path(out, shard, len(rows_by_shard))
        with ResultsFile(part, COLUMNS, {**settings, "shard": [shard, len(rows_by_shard)]}) as f:
            for row in rows:
                f.append(row)
        mark_complete(part, dataset_size)


def test_differing_settings_names_each_key_that_differs() -> None:
    recorded = {"command": "certify", "sigma": 0.25, "n": 10_000, "crop": None, "extra": 1}
    expected = {"command": "certify", "sigma": 0.5 / 2, "n": 10_000, "crop": None}
    assert differing_settings(recorded, expected) == []
    # A float within 1e-9 relative is the same number; one beyond it is not.
    assert differing_settings(recorded, {"sigma": 0.25 * (1 + 1e-12)}) == []
    assert differing_settings(recorded, {"sigma": 0.25 * (1 + 1e-6)}) == ["sigma"]
    assert differing_settings(recorded, {"n": 100_000, "command": "certify-attack"}) == [
        "n", "command"]
    # A missing key reads as None; a bool is not the number 1; a string is not a number.
    assert differing_settings(recorded, {"resize": None, "seed": 0}) == ["seed"]
    assert differing_settings(recorded, {"extra": True}) == ["extra"]
    assert differing_settings({"sigma": "0.25"}, {"sigma": 0.25}) == ["sigma"]


def test_shards_merge_in_single_process_order(tmp_path) -> None:
    out = tmp_path / "run.tsv"
    write_shards(out, [[(0, 1, "a"), (20, 1, "c"), (40, 0, "e")], [(10, 2, "b"), (30, 3, "d")]],
                 dataset_size=50)
    assert merge_parts(out, 2) == 5
    assert [line.split("\t")[0] for line in out.read_text().splitlines()] == [
        "idx", "0", "10", "20", "30", "40"]
    assert json.loads(settings_path(out).read_text()) == SHARDED
    before = out.read_bytes()
    assert merge_parts(out, 2) == 5  # joining again changes nothing
    assert out.read_bytes() == before
    out.write_text("idx\tlabel\tvalue\n0\t1\ta\n")
    with pytest.raises(ResultsConflictError, match="exists"):
        merge_parts(out, 2)
    assert out.read_text() == "idx\tlabel\tvalue\n0\t1\ta\n"


def test_merge_refuses_unfinished_or_mismatched_parts(tmp_path) -> None:
    out = tmp_path / "run.tsv"
    write_shards(out, [[(0, 1, "a")], [(10, 2, "b")]], dataset_size=20)
    part_path(out, 1, 2).with_name("run.tsv.part1of2.complete").unlink()
    with pytest.raises(ValueError, match="unfinished"):
        merge_parts(out, 2)
    other = tmp_path / "other.tsv"
    for shard, sigma in [(0, 0.25), (1, 0.5)]:
        part = part_path(other, shard, 2)
        with ResultsFile(part, COLUMNS, {**SHARDED, "sigma": sigma, "shard": [shard, 2]}) as f:
            f.append((10 * shard, 1, "x"))
        mark_complete(part, 20)
    with pytest.raises(ValueError, match="other settings"):
        merge_parts(other, 2)
    assert not other.exists()


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "1/2/3"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(text)
