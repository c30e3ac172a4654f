"""One owner for where artefacts live: every CLI default and the pipeline agree with helpers.paths."""

import json
from pathlib import Path

import pytest

from helpers import paths
from helpers.aws import deploy
from helpers.build import package
from helpers.data.dataset import Split
from helpers.export import onnx_export as export
from helpers.pipeline import steps


def _defaults():
    exported = export.build_parser().parse_args([])
    built = package.build_parser().parse_args([])
    deployed = deploy.build_parser().parse_args(["up", "--bucket", "my-bucket"])
    return exported, built, deployed


@pytest.mark.parametrize("override", [False, True], ids=["mode-folder", "HELPERS_ARTIFACTS"])
def test_export_package_and_deploy_defaults_point_at_the_same_files(override, tmp_path, monkeypatch):
    if override:
        monkeypatch.setenv(paths.ARTIFACTS_VARIABLE, str(tmp_path / "elsewhere"))
    layout = paths.run_artifacts()
    exported, built, deployed = _defaults()
    assert exported.out == layout.onnx and deployed.model == layout.shipped  # deploy uploads the model that ships
    assert built.out_dir / f"lambda-{built.arch}.zip" == deployed.zip == layout.zip("x86_64")
    assert exported.checkpoint == layout.checkpoint == Path(steps.train_config().out_dir) / "best.ckpt"
    assert (layout.root == tmp_path / "elsewhere") if override else (layout.root.name == "quick")


def test_quick_and_full_runs_keep_separate_folders(monkeypatch):
    monkeypatch.delenv(paths.ARTIFACTS_VARIABLE, raising=False)
    quick, full = paths.run_artifacts(quick=True), paths.run_artifacts(quick=False)
    assert quick.root != full.root and quick.root.parent == full.root.parent == paths.ARTIFACTS_ROOT
    monkeypatch.setenv(paths.QUICK_VARIABLE, "0")
    assert paths.run_artifacts() == full


def test_shown_paths_carry_no_checkout_location():
    assert paths.shown(paths.SAMPLE_DIR) == "data/fridge-sample"
    assert paths.shown("/elsewhere/model.onnx") == "/elsewhere/model.onnx"


def test_training_leaves_its_split_next_to_the_checkpoint(trained):
    layout = steps.artifacts()
    assert Path(trained.checkpoint) == layout.checkpoint.resolve()
    record = json.loads(layout.split.read_text())
    assert record["root"] == "data/fridge-sample"  # no machine path in the record
    split = Split.read(layout.split)
    assert list(split.train) == trained.data["train_real_images"]
    assert list(split.valid) == trained.data["valid_real_images"]
    assert list(split.test) == trained.data["test_real_images"]
    assert not set(split.train) & set(split.valid) and not set(split.test) & set(split.train + split.valid)
    assert [r.image_path.name for r in split.real()] == list(split.train + split.valid + split.test)
    holdout = split.holdout()
    assert len(holdout) == trained.n_valid_synthetic >= 20
    assert split.evaluation() == split.real(
        "test"
    )  # the images that chose nothing; the synthetic hold-out is secondary


def test_a_run_without_a_split_record_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no split record"):
        Split.read(paths.split_file(tmp_path))


@pytest.mark.parametrize(
    "value, quick", [(None, True), ("1", True), ("0", False), ("false", False), ("False", False), ("", False)]
)
def test_quick_is_the_one_default_mode(value, quick, monkeypatch):
    """What `make run` builds is what every command reads unless HELPERS_QUICK says otherwise."""
    if value is None:
        monkeypatch.delenv(paths.QUICK_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(paths.QUICK_VARIABLE, value)
    assert paths.quick_mode() is quick
    assert paths.quick_unless(full=False) is quick and paths.quick_unless(full=True) is False


def _missing_cases():
    """(argv, the command the message must name): each CLI that reads a run's artefacts, run with its
    defaults (or pointed at the default path where its default is to build or to go without)."""
    quick, full = paths.run_artifacts(quick=True), paths.run_artifacts(quick=False)
    image = str(next((paths.SAMPLE_DIR / "images").glob("*.jpg")))
    run_all = "python -m helpers run-all"
    return [
        (["serve"], run_all),
        (["serve", "--full"], f"{run_all} --full"),
        (["invoke", image], run_all),
        (["invoke", "--full", image], f"{run_all} --full"),
        (["arm64"], run_all),
        (["arm64", "--full"], f"{run_all} --full"),
        (["benchmark", "--checkpoints", str(quick.checkpoint)], run_all),
        (["soak", "--model", str(full.onnx)], f"{run_all} --full"),
        (["deploy", "up", "--bucket", "my-bucket", "--region", "us-east-1"], run_all),
        (["batch", "local", str(paths.SAMPLE_DIR / "images")], run_all),
        (["evaluate"], run_all),
        (["package", "--without-kernel", "--model", str(quick.onnx)], run_all),
        (["export"], run_all),
    ]


@pytest.mark.parametrize("case", range(13))
def test_a_missing_artefact_names_the_command_that_builds_it(case, tmp_path, monkeypatch, capsys):
    """After `make run` the commands find artifacts/quick; where an artefact is missing they exit
    non-zero with one line naming the command that truly builds it (quick: run-all; --full: run-all --full)."""
    from helpers.__main__ import main

    monkeypatch.setattr(paths, "ARTIFACTS_ROOT", tmp_path)  # nothing built
    monkeypatch.delenv(paths.ARTIFACTS_VARIABLE, raising=False)
    monkeypatch.delenv(paths.QUICK_VARIABLE, raising=False)
    cases = _missing_cases()
    assert len(cases) == 13
    argv, command = cases[case]
    assert main(argv) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith(f"({command} builds it)"), lines
