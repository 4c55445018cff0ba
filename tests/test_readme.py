"""The README's figure commands run as written on a fresh clone: their inputs are committed."""

from __future__ import annotations

import glob
import shlex
from pathlib import Path

import pytest

from certify.cli.plot import main as plot_main

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"


def readme_plot_commands() -> list[str]:
    """Every `certify-plot` command line of the README's shell blocks that draws a docs/ figure."""
    lines = README.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines
            if line.strip().startswith("certify-plot docs/") and "--out docs/" in line]


def test_the_readme_names_its_figure_commands():
    assert readme_plot_commands(), "the README draws its figures with certify-plot from docs/"


@pytest.mark.parametrize("command", readme_plot_commands())
def test_readme_plot_command_runs_on_the_committed_results(command, tmp_path, monkeypatch, capsys):
    words = shlex.split(command)[1:]
    out = Path(words[words.index("--out") + 1])
    words[words.index("--out") + 1] = str(tmp_path / out.name)  # never touch the committed figure
    monkeypatch.chdir(REPOSITORY)
    arguments = [match for word in words for match in (sorted(glob.glob(word)) or [word])]
    assert plot_main(arguments) == 0, capsys.readouterr().err
    assert (tmp_path / out.name).stat().st_size > 10_000
    assert (REPOSITORY / out).is_file(), f"the README shows {out}, which is not committed"
