"""run-all: a failing notebook is named; parameters are injected as papermill does; committed notebooks are clean."""

import json
import os
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from helpers.pipeline.run_all import NOTEBOOKS_DIR, SERIES, NotebookFailed, main, parameter_names, run_notebook
from helpers.train.summary import RunSummary


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


ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:home|root|work|tmp|Users|var/folders|opt|usr)/")


@pytest.mark.parametrize("name", SERIES)
def test_committed_notebooks_are_clean_and_parametrised(name):
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged parameters"
    assert parameter_names(notebook), "the parameters cell assigns no names"
    assert not [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    # Committed from one run, top to bottom: execution counts 1, 2, 3, ... and every checked cell has its output.
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(c.outputs for c in code if "NBVAL_CHECK_OUTPUT" in c.source)
    for cell in code:
        assert "__import__(" not in cell.source
        assert "execution" not in cell.metadata
        text = cell.source + json.dumps(cell.outputs)
        assert not ABSOLUTE_PATH.search(text), ABSOLUTE_PATH.search(text).group(0)
        assert "\\u001b[" not in json.dumps(cell.outputs), "terminal escape codes in an output"


def test_parameters_are_injected_after_the_parameters_cell(tmp_path):
    notebook = new_notebook(cells=[new_code_cell("EPOCHS = None\nLR = 0.1"), new_code_cell("print(EPOCHS, LR)")])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "params.ipynb"
    nbformat.write(notebook, source)
    run_notebook(source, tmp_path / "out.ipynb", parameters={"EPOCHS": 3, "THREADS": 1})
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert executed.cells[1].metadata["tags"] == ["injected-parameters"]
    assert executed.cells[1].source.endswith("EPOCHS = 3")  # THREADS: not a parameter of this notebook
    assert executed.cells[2].outputs[0]["text"] == "3 0.1\n"
    assert "execution" not in executed.cells[2].metadata


def test_run_all_refuses_an_unknown_parameter(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--set", "EPOCS=3"])
    assert exit_info.value.code == 2
    assert "EPOCS: no notebook has such a parameter" in capsys.readouterr().err


@pytest.mark.slow  # the five notebooks on a COCO export: about 3 minutes
def test_the_whole_series_runs_on_a_users_coco_export(tmp_path, monkeypatch, capsys):
    """`make run ARGS="--set DATASET=... --set ARTIFACTS=..."` as a user runs it on their own export:
    trained on it (its classes), exported, packaged, deployed on moto; one epoch to keep it short."""
    from helpers.data.convert import convert
    from helpers.paths import SAMPLE_DIR
    from helpers.runtime.model import Detector

    monkeypatch.setenv("HELPERS_QUICK", "1")  # main sets it for the notebooks; restored afterwards
    export, artifacts = tmp_path / "coco-export", tmp_path / "run"
    classes = convert(SAMPLE_DIR, "coco", export).classes
    argv = ["--set", f"DATASET={export}", "--set", f"ARTIFACTS={artifacts}", "--set", "EPOCHS=1"]
    assert main([*argv, "--set", "CHECK_BLOG_GRAPH=False"]) == 0, capsys.readouterr().err
    summary = RunSummary.load(artifacts / "train" / "summary.json")
    assert summary.data["description"] == str(export) and summary.epochs == 1
    assert Detector(artifacts / "model.onnx").class_map.names == tuple(classes)
    assert (artifacts / "dist" / "lambda-x86_64.zip").is_file()
    assert json.loads((artifacts / "deployment.json").read_text())["function"]["Runtime"] == "python3.12"
    assert sorted(p.name for p in (artifacts / "notebooks").glob("*.ipynb")) == list(SERIES)


@pytest.mark.parametrize(
    ("argv", "quick"), [([], True), (["--full"], False), (["--full", "--set", "QUICK=True"], True)]
)
def test_the_mode_reaches_every_notebooks_quick_parameter_and_the_commands(argv, quick, monkeypatch, tmp_path):
    from helpers.pipeline import run_all

    monkeypatch.setenv("HELPERS_QUICK", "1")  # main sets it; restored afterwards
    passed = []
    monkeypatch.setattr(run_all, "run_notebook", lambda source, out, parameters=None: passed.append(parameters) or 0.0)
    monkeypatch.setattr(run_all, "summary", lambda layout: [])
    assert main([*argv, "--set", f"ARTIFACTS={tmp_path}"]) == 0
    assert len(passed) == len(SERIES) and all(p.get("QUICK", True) is quick for p in passed)
    assert os.environ["HELPERS_QUICK"] == ("1" if quick else "0")
