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
    assert exported.out == deployed.model == layout.onnx  # export writes what deploy uploads
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
    assert Path(trained["checkpoint"]) == layout.checkpoint.resolve()
    record = json.loads(layout.split.read_text())
    assert record["root"] == "data/fridge-sample"  # no machine path in the record
    split = Split.read(layout.split)
    assert list(split.train) == trained["data"]["train_real_images"]
    assert list(split.valid) == trained["data"]["valid_real_images"]
    assert not set(split.train) & set(split.valid)
    assert [r.image_path.name for r in split.real()] == list(split.train + split.valid)
    holdout = split.holdout()
    assert len(holdout) == trained["n_valid_synthetic"] >= 20
    assert split.evaluation() == split.real("valid")  # the unseen real images; the synthetic hold-out is secondary


def test_a_run_without_a_split_record_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no split record"):
        Split.read(paths.split_file(tmp_path))
