"""certify.files: the atomic writer, the lock and the path check that results files and training
checkpoints share."""

from __future__ import annotations

import os

import pytest

from certify.files import LockHeldError, path_problem, release_lock, take_lock, write_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "out.tsv"
    write_atomically(path, "old\n")

    def fail(file):
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail)
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["out.tsv"]
    write_atomically(path, b"new\n")
    assert path.read_bytes() == b"new\n" and os.listdir(tmp_path) == ["out.tsv"]


def test_the_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    path = tmp_path / "out.tsv"
    descriptor = take_lock(path)
    with pytest.raises(LockHeldError, match=f"pid {os.getpid()}") as refused:
        take_lock(path)
    assert refused.value.holder.startswith(f"pid {os.getpid()} on ")
    release_lock(path, descriptor)
    assert not (tmp_path / "out.tsv.lock").exists()
    release_lock(path, take_lock(path))


def test_path_problems(tmp_path):
    (tmp_path / "file").write_text("x")
    assert path_problem(tmp_path) == ("folder", None)
    assert path_problem(tmp_path / "file") is None
    assert path_problem(tmp_path / "new" / "out.tsv") is None
    assert path_problem(tmp_path / "file" / "out.tsv") == ("below a file", tmp_path / "file")
    assert path_problem(tmp_path / "file" / "a" / "b.tsv") == ("below a file", tmp_path / "file")
