"""The series' steps: parameters become a training configuration; artefacts are reused only when
made from the same parameters (their fingerprint), and made again otherwise."""

import dataclasses
import json
import shutil

import onnx
import pytest

from helpers import provenance
from helpers.export.onnx_export import recorded, training_run_of, write_metadata
from helpers.export.quantize import QUANTIZATION
from helpers.paths import PROJECT_ROOT
from helpers.pipeline import steps
from helpers.train.config import TrainConfig
from helpers.train.models import LITE0_MODEL, SMALL_MODEL
from helpers.train.summary import RunSummary


def test_parameters_left_at_none_take_the_environment_and_mode_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HELPERS_QUICK", "1")
    monkeypatch.setenv("HELPERS_MODEL", SMALL_MODEL)
    series = steps.Series.from_parameters(artifacts=tmp_path)
    config = series.train_config()
    assert series.quick and config.model == SMALL_MODEL and config.epochs == TrainConfig.quick().epochs
    assert config.out_dir == str(tmp_path / "train")
    changed = steps.Series.from_parameters(False, LITE0_MODEL, "sample", 2, 1e-4, 320, tmp_path).train_config()
    assert (changed.model, changed.dataset, changed.epochs, changed.lr, changed.image_size) == (
        LITE0_MODEL,
        "sample",
        2,
        1e-4,
        320,
    )
    assert changed.preprocess().image_size == 320


def test_the_fingerprint_names_what_the_model_depends_on():
    config = TrainConfig.quick()
    assert config.fingerprint() == dataclasses.replace(config, out_dir="/elsewhere", threads=1).fingerprint()
    for change in (
        {"epochs": config.epochs + 1},
        {"lr": 1e-4},
        {"image_size": 320},
        {"dataset": "fridge"},
        {"seed": 1},
    ):
        assert dataclasses.replace(config, **change).fingerprint() != config.fingerprint(), change


def test_an_edited_training_source_file_changes_the_fingerprint_and_is_named(tmp_path, monkeypatch):
    for part in provenance.TRAINING_CODE:
        source, copy = PROJECT_ROOT / part, tmp_path / part
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, copy)
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    config = TrainConfig.quick()
    before, fingerprint = provenance.code_digests(provenance.TRAINING_CODE), config.fingerprint()
    assert "helpers/data/synthetic.py" in before and "helpers/train/run.py" in before
    edited = tmp_path / "helpers/data/synthetic.py"
    edited.write_text(edited.read_text() + "\n# an edit\n")
    assert provenance.changed_files(before, provenance.code_digests(provenance.TRAINING_CODE)) == [
        "helpers/data/synthetic.py"
    ]
    assert config.fingerprint() != fingerprint


@pytest.mark.slow
def test_a_changed_parameter_trains_and_exports_again_the_same_ones_reuse(tmp_path, capsys, fridge_photos_coco):
    """On the 6 fridge photos (the bookkeeping, not the model, is under test: an epoch takes seconds)."""
    fridge_photos = fridge_photos_coco
    artifacts = tmp_path / "run"
    first = steps.Series(quick=True, epochs=1, dataset=str(fridge_photos), artifacts=artifacts)
    summary = first.ensure_trained()
    assert "training" in capsys.readouterr().out  # said before it started
    onnx_path = first.ensure_onnx()
    assert training_run_of(onnx_path) == summary.config_hash

    assert (
        steps.Series(quick=True, epochs=1, dataset=str(fridge_photos), artifacts=artifacts).ensure_trained() == summary
    )
    assert f"config hash {summary.config_hash}" in capsys.readouterr().out  # "reusing ... config hash"

    # As if the first run had been made by an older training script, too: both reasons are named.
    summary_path = artifacts / "train" / "summary.json"
    stale = RunSummary.load(summary_path)
    stale.code["helpers/train/run.py"] = "0" * 12
    stale.save(summary_path)
    changed = steps.Series(quick=True, epochs=1, lr=1e-4, dataset=str(fridge_photos), artifacts=artifacts)
    retrained = changed.ensure_trained()
    assert retrained.config_hash != summary.config_hash
    err = capsys.readouterr().out  # the training line (stdout: progress, not an error)
    assert f"holds config hash {summary.config_hash}" in err
    assert "parameters changed: lr;" in err and "training code changed: helpers/train/run.py" in err
    assert changed.ensure_onnx() == onnx_path and training_run_of(onnx_path) == retrained.config_hash
    assert "made from another training run" in capsys.readouterr().out

    # An export made by other export code is made again, and the note names the file.
    model = onnx.load(str(onnx_path))
    code = json.loads(recorded(onnx_path, "code"))
    write_metadata(model, {"code": json.dumps(code | {"helpers/export/onnx_export.py": "0" * 12})})
    onnx.save(model, str(onnx_path))
    assert changed.ensure_onnx() == onnx_path and json.loads(recorded(onnx_path, "code")) == code
    assert "made by other export code (helpers/export/onnx_export.py)" in capsys.readouterr().out

    # INT8 made by an earlier quantisation recipe (same training run) is made again, not reused.
    int8_path = changed.ensure_int8()
    assert recorded(int8_path, "quantization") == QUANTIZATION
    model = onnx.load(str(int8_path))
    write_metadata(model, {"quantization": "static QDQ int8, per-channel, Conv/Gemm/MatMul"})
    onnx.save(model, str(int8_path))
    capsys.readouterr()
    assert changed.ensure_int8() == int8_path and recorded(int8_path, "quantization") == QUANTIZATION
    assert "made by another quantization recipe" in capsys.readouterr().out


def test_a_notebook_opened_without_the_environment_runs_quick_and_the_variable_still_decides(monkeypatch):
    """Opened in Jupyter with no HELPERS_QUICK, the notebooks reproduce their committed (quick) outputs;
    `make run ARGS=--full` sets HELPERS_QUICK=0; an explicit QUICK wins over both."""
    monkeypatch.delenv("HELPERS_QUICK", raising=False)
    assert steps.Series.from_parameters().quick is True
    monkeypatch.setenv("HELPERS_QUICK", "0")
    assert steps.Series.from_parameters().quick is False
    assert steps.Series.from_parameters(quick=True).quick is True
    monkeypatch.setenv("HELPERS_QUICK", "1")
    assert steps.Series.from_parameters(quick=False).quick is False


def test_relative_paths_in_a_notebook_mean_the_project_root_unless_they_exist_from_the_notebook(monkeypatch, tmp_path):
    """`make run ARGS="--set DATASET=data/x --set ARTIFACTS=artifacts/y"` names paths from the project
    root, while the notebook's kernel runs in notebooks/ (its artefacts once landed in notebooks/artifacts)."""
    notebooks = PROJECT_ROOT / "notebooks"
    monkeypatch.chdir(notebooks)
    series = steps.Series.from_parameters(quick=True, dataset="data/fridge-sample", artifacts="artifacts/try")
    assert series.dataset == str(PROJECT_ROOT / "data/fridge-sample")
    assert series.layout().root == PROJECT_ROOT / "artifacts/try"
    assert steps.Series.from_parameters(quick=True, dataset="../data/fridge-sample").dataset == str(
        (PROJECT_ROOT / "data/fridge-sample").resolve()
    )
    assert steps.Series.from_parameters(quick=True, dataset="sample").dataset == "sample"
    assert steps.Series.from_parameters(quick=True, artifacts=tmp_path).layout().root == tmp_path


def test_the_later_notebooks_follow_the_run_their_artefacts_folder_holds(tmp_path, monkeypatch):
    """Notebook 01 trained with EPOCHS=8 and LR=1e-4, or `helpers train` with a batch size notebooks do
    not have: notebooks 02-05 (Series.trained_in) serve that run instead of training the defaults again;
    an empty folder gives the mode's defaults."""
    monkeypatch.delenv("HELPERS_MODEL", raising=False)
    assert (
        steps.Series.trained_in(True, tmp_path).train_config() == steps.Series(True, artifacts=tmp_path).train_config()
    )
    trained = TrainConfig.quick(epochs=8, lr=1e-4, batch_size=4, out_dir=str(tmp_path / "train"))
    record = {f.name: None for f in dataclasses.fields(RunSummary)} | {"config": trained.as_record()}
    (tmp_path / "train").mkdir(exist_ok=True)
    RunSummary(**record).save(tmp_path / "train" / "summary.json")
    series = steps.Series.trained_in(True, tmp_path)
    assert (series.epochs, series.lr) == (8, 1e-4)
    assert series.train_config().fingerprint() == trained.fingerprint()
    assert "epochs: 8 | lr: 0.0001" in series.describe()


def test_only_the_default_quick_recipe_is_judged_by_the_bounds(tmp_path, monkeypatch):
    """The notebooks assert the bounds (measured on CI's run) only for that recipe; a learner's
    EPOCHS=8 or full mode is reported, not judged."""
    monkeypatch.delenv("HELPERS_MODEL", raising=False)
    assert steps.Series(True, artifacts=tmp_path).default_recipe()
    assert not steps.Series(True, epochs=8, artifacts=tmp_path).default_recipe()
    assert not steps.Series(False, artifacts=tmp_path).default_recipe()


def test_one_process_at_a_time_makes_an_artefact_and_the_steps_may_nest(tmp_path):
    """artefacts_lock: while a process holds a folder's lock, another cannot take it (it would wait and
    then reuse what was made); inside one process the steps call one another under the same lock."""
    import fcntl
    import select
    import subprocess
    import sys

    program = (
        "import sys; from pathlib import Path; from helpers.pipeline.steps import artefacts_lock\n"
        "with artefacts_lock(Path(sys.argv[1])), artefacts_lock(Path(sys.argv[1])):  # nested\n"
        "    print('held', flush=True); sys.stdin.readline()\n"
        "print('released', flush=True)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", program, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    ready, _, _ = select.select([holder.stdout], [], [], 60)  # a nesting that deadlocks fails, not hangs
    if not ready:
        holder.kill()
    assert ready and holder.stdout.readline().strip() == "held"
    with open(tmp_path / ".lock", "a") as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process: it would wait
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "released" and holder.wait(timeout=60) == 0
    with steps.artefacts_lock(tmp_path), steps.artefacts_lock(tmp_path):
        with open(tmp_path / ".lock", "a") as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by this process, for other processes
    with open(tmp_path / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and free once the outer step returns
