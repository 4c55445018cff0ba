"""The command behind the README table, run with one seed, one sigma and one epoch per stage."""

from __future__ import annotations

import re

import pytest
from make_defaults import DefaultsConfig, run


@pytest.mark.slow
def test_one_epoch_run_fills_every_cell_and_resumes_from_its_files(tmp_path):
    config = DefaultsConfig(
        work=str(tmp_path), seeds=(0,), sigmas=(0.25,), pretrain_epochs=1, finetune_epochs=1
    )
    lines: list[str] = []
    table = run(config, log=lines.append)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "baseline-sigma0.25-seed0.pt",
        "rush-sigma0.25-seed0.pt",
        "simclr-seed0.pt",
    ]
    row = next(line for line in table.splitlines() if line.startswith("| 0.25 |"))
    cells = [float(cell) for cell in re.findall(r"\| ([\d.]+)", row)[1:]]
    assert len(cells) == 4 and all(0 <= cell <= 100 for cell in cells)
    assert "logistic regression on raw pixels | 96.7 |" in table  # deterministic, seed-free
    assert any("linear probe simclr" in line for line in lines)
    assert run(config, log=lambda line: None) == table  # a rerun reuses the checkpoints
