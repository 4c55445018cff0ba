"""scripts/recipes_digits.py at a tiny size: every cell filled, a rerun trains and samples nothing,
and --table-only reads the same numbers back."""

from __future__ import annotations

import re

import pytest
import recipes_digits


@pytest.mark.slow
def test_tiny_run_fills_the_table_and_resumes(tmp_path, capsys):
    arguments = ["--work", str(tmp_path), "--seeds", "0", "--sigmas", "0.5", "--recipes",
                 "gaussian", "smoothadv", "--pretrain-epochs", "1", "--epochs", "1",
                 "--warmup-epochs", "1", "--n", "200", "--skip", "90", "--batch", "300",
                 "--device", "cpu"]
    assert recipes_digits.main(arguments) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| 0.50 |")]
    assert len(rows) == 4  # two recipes, RUSH and baseline
    for row in rows:
        cells = [float(cell) for cell in re.findall(r"\| (\d\.\d+)", row)[1:]]
        assert len(cells) == 6 and all(0 <= cell <= 1 for cell in cells[:5])
        accuracies = cells[:5]
        assert accuracies == sorted(accuracies, reverse=True)
    assert "4 images: every 90th" in table
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    assert recipes_digits.main(arguments) == 0  # resumes: nothing is retrained or recertified
    assert capsys.readouterr().out == table
    changed = [path for path, stamp in stamps.items() if path.stat().st_mtime_ns != stamp]
    assert all(path.suffix == ".md" for path in changed), changed
    assert recipes_digits.main([*arguments, "--table-only"]) == 0
    assert capsys.readouterr().out == table
