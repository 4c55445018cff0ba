"""notebooks/quickstart.ipynb runs without a cell error and is committed with its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_committed_notebook_has_its_outputs():
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code_cells = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code_cells and all(cell["execution_count"] for cell in code_cells)
    counts = [cell["execution_count"] for cell in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), "cells were not run top to bottom"
    outputs = [output for cell in code_cells for output in cell["outputs"]]
    assert not [output for output in outputs if output["output_type"] == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert images, "the certified-accuracy curve is missing from the committed outputs"


def table_output(notebook_cells: list) -> str:
    """The printed output of the cell that prints the certified-accuracy table."""
    cell = next(cell for cell in notebook_cells
                if cell["cell_type"] == "code" and "certified_accuracy_table" in "".join(
                    cell["source"]) and "print(" in "".join(cell["source"]))
    texts = [output.get("text", "") for output in cell["outputs"]
             if output["output_type"] == "stream"]
    # Committed JSON stores a stream's text as a list of lines, nbformat's nodes as one string.
    return "".join("".join(text) if isinstance(text, list) else text for text in texts)


@pytest.mark.slow
def test_notebook_executes_and_reproduces_its_certified_accuracy(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="needs the dev extra: pip install nbformat")
    nbclient = pytest.importorskip("nbclient", reason="needs the dev extra: pip install nbclient")
    pytest.importorskip("ipykernel", reason="needs the dev extra: pip install ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    committed = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    expected = table_output(committed)
    assert "| σ = 0.25 |" in expected  # the committed table, e.g. | σ = 0.25 | 1.000 | ...
    assert table_output(notebook.cells) == expected  # seeded noise: the same certificates
