"""run-all stops at a failing notebook, naming it and the failing cell."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers.run_all import NOTEBOOKS_DIR, SERIES, NotebookFailed, run_notebook


def test_series_lists_the_notebooks_in_order():
    assert list(SERIES) == sorted(p.name for p in NOTEBOOKS_DIR.glob("0*.ipynb"))


def test_a_failing_cell_is_named_and_the_executed_notebook_kept(tmp_path):
    notebook = new_notebook(
        cells=[new_code_cell("x = 1"), new_code_cell("raise ValueError(42)"), new_code_cell("y = 2")]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "07_broken.ipynb"
    nbformat.write(notebook, source)
    destination = tmp_path / "out.ipynb"
    with pytest.raises(
        NotebookFailed, match=r"07_broken.ipynb failed in cell 1 \('raise ValueError\(42\)'\): ValueError: 42"
    ):
        run_notebook(source, destination)
    executed = nbformat.read(destination, as_version=4)
    assert executed.cells[1].outputs[0]["ename"] == "ValueError"
