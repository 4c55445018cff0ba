"""scripts/recipes_digits.py at a tiny size: every cell filled, a rerun trains and samples nothing,
and --table-only reads the same numbers back."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "recipes_digits.py"


def load_script():
    spec = importlib.util.spec_from_file_location("recipes_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_run_fills_the_table_and_resumes(tmp_path, capsys):
    script = load_script()
    arguments = ["--work", str(tmp_path), "--seeds", "0", "--sigmas", "0.5", "--recipes",
                 "gaussian", "smoothadv", "--pretrain-epochs", "1", "--epochs", "1",
                 "--warmup-epochs", "1", "--n", "200", "--skip", "90", "--batch", "300",
                 "--device", "cpu"]
    assert script.main(arguments) == 0
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
    assert script.main(arguments) == 0  # resumes: nothing is retrained or recertified
    assert capsys.readouterr().out == table
    changed = [path for path, stamp in stamps.items() if path.stat().st_mtime_ns != stamp]
    assert all(path.suffix == ".md" for path in changed), changed
    assert script.main([*arguments, "--table-only"]) == 0
    assert capsys.readouterr().out == table
