"""helpers accuracy: the training table on the test images, its spread over folds and its targets."""

from dataclasses import replace
from pathlib import Path

import pytest

from helpers.measure import accuracy, accuracy_report, fold_robustness, targets
from helpers.measure.targets import MET, NOT_MET


@pytest.fixture(scope="module")
def row(trained, tmp_path_factory):
    return accuracy.measure_trained("quick", trained, tmp_path_factory.mktemp("accuracy"))


@pytest.fixture
def made_up_row():
    """A row of measure_trained's shape with made-up figures: what the goal and table logic read,
    without training."""
    intervals = {"map": [0.4, 0.6], "map_50": [0.8, 0.95], "recall": [0.8, 0.97], "precision": [0.75, 0.95]}
    return accuracy_report.AccuracyRow(
        mode="quick",
        model="fasterrcnn_efficientnet_lite0_fpn",
        seed=42,
        fold=0,
        config_hash="0123456789ab",
        weights="imagenet",
        dataset="sample",
        train_seconds=143.0,
        cpu_seconds=276.0,
        epochs=6,
        best_epoch=5,
        n_train=131,
        test=accuracy_report.TestFigures(31, 33, 0.5, 0.9, 0.55, 0.9, 0.86, 30, 5, intervals),
        fridge_test_found={"13.jpg": "2/2", "15.jpg": "2/2"},
        validation_map_50=0.93,
        served={
            "fp32": {"map": 0.507, "map_50": 0.930},
            "int8_all": {"map": 0.504, "map_50": 0.935},
            "int8_served": {"map": 0.503, "map_50": 0.931},
        },
        robustness={"clean": [33, 30, 5], "mirrored": [33, 29, 5], "jpeg quality 20": [33, 27, 6]},
    )


def test_the_row_is_the_run_on_its_test_images_and_its_served_models(row, trained, served_graph_test_figures):
    test = trained.test
    assert row.seed == trained.config["seed"] and row.fold == 0 and row.train_seconds == trained.seconds
    assert (row.test.found, row.test.false, row.test.images) == (test["found"], test["false"], test["images"])
    assert row.test.intervals["map_50"][0] <= row.test.map_50 <= row.test.intervals["map_50"][1]
    # Fold 0 of seed 42 tests two fridge photos; they are none of the validation images.
    assert set(row.fridge_test_found) == {"13.jpg", "15.jpg"}
    # The exported model through the Lambda's Detector measures what PyTorch measures with the same graph.
    assert row.served["fp32"]["map_50"] == pytest.approx(served_graph_test_figures["map_50"], abs=0.01)
    assert row.served["fp32"]["map"] == pytest.approx(served_graph_test_figures["map"], abs=0.01)
    # Robustness counts every test box under each perturbation; the EXIF-rotated copies are served upright.
    assert {counts[0] for counts in row.robustness.values()} == {test["boxes"]}
    assert row.robustness["exif-rotated (6)"] == row.robustness["clean"]
    assert abs(row.robustness["clean"][1] - served_graph_test_figures["found"]) <= 1


def _status(row, goal_prefix):
    return next(s for goal, _, s in accuracy_report.run_goals(row) if goal.startswith(goal_prefix))


def test_each_quick_target_is_judged_from_its_figure(made_up_row):
    row = made_up_row
    slow = replace(row, train_seconds=targets.QUICK_MAX_SECONDS + 1)
    fast = replace(row, train_seconds=targets.QUICK_MAX_SECONDS)
    assert (_status(slow, "training"), _status(fast, "training")) == (NOT_MET, MET)
    test = row.test
    short = replace(row, test=replace(test, recall=targets.QUICK_MIN_RECALL - 0.01, precision=0.9))
    imprecise = replace(row, test=replace(test, recall=0.9, precision=targets.QUICK_MIN_PRECISION - 0.01))
    enough = replace(row, test=replace(test, recall=targets.QUICK_MIN_RECALL, precision=targets.QUICK_MIN_PRECISION))
    assert [_status(r, "recall") for r in (short, imprecise, enough)] == [NOT_MET, NOT_MET, MET]
    served = row.served
    lost = replace(row, served=dict(served, int8_served=dict(served["fp32"], map=served["fp32"]["map"] - 0.011)))
    kept = replace(row, served=dict(served, int8_served=dict(served["fp32"], map=served["fp32"]["map"] - 0.009)))
    assert (_status(lost, "INT8"), _status(kept, "INT8")) == (NOT_MET, MET)


def test_map_is_judged_as_the_mean_over_folds(made_up_row):
    def fold(i, map_50, map_=0.6):
        return replace(made_up_row, fold=i, test=replace(made_up_row.test, map_50=map_50, map=map_))

    low, high = targets.QUICK_MIN_MAP_50 - 0.05, targets.QUICK_MIN_MAP_50 + 0.05
    assert accuracy_report.fold_goals("quick", [fold(0, low), fold(1, high)])[0][2] == MET  # the mean is on the line
    assert accuracy_report.fold_goals("quick", [fold(0, low), fold(1, high - 0.01)])[0][2] == NOT_MET
    full = [replace(r, mode="full") for r in (fold(0, 0.95, 0.62), fold(1, 0.93, 0.6))]
    assert accuracy_report.fold_goals("full", full)[0][2] == MET
    assert accuracy_report.fold_goals("full", [replace(full[0], test=replace(full[0].test, map=0.5))])[0][2] == NOT_MET


def test_full_mode_is_judged_on_cpu_minutes(made_up_row):
    full = replace(made_up_row, mode="full", cpu_seconds=targets.FULL_MAX_CPU_MINUTES * 60)
    assert _status(full, "training") == MET
    assert _status(replace(full, cpu_seconds=full.cpu_seconds + 60), "training") == NOT_MET


def test_the_table_gives_every_run_and_the_spread_over_folds(made_up_row):
    row = made_up_row
    second = replace(row, fold=1, train_seconds=row.train_seconds + 10, test=replace(row.test, recall=0.5))
    text = accuracy_report.markdown([row, second])
    assert f"| quick | {row.model} | 42 | 0 | {row.train_seconds:.0f} " in text
    assert "| 0.900 [0.80, 0.95] (31 images, 33 boxes) " in text
    assert f"| quick | {row.model} | 42 | 1 | {second.train_seconds:.0f} " in text
    assert "recall 0.70 ± 0.28 (0.50-0.90)" in text  # mean ± standard deviation (min-max) over the two folds
    assert f"| quick {row.model} seed 42, 2 folds | mean test mAP@.5 >= {targets.QUICK_MIN_MAP_50} | 0.900 |" in text


def test_a_result_is_kept_only_while_it_describes_todays_recipe(row, tmp_path):
    assert row.config_hash == accuracy.current_fingerprint(row.to_json(), tmp_path)  # the quick run is today's recipe
    assert accuracy.current_fingerprint(dict(row.to_json(), fold=1), tmp_path) != row.config_hash
    assert accuracy.current_fingerprint(dict(row.to_json(), model="a model this tool does not train"), tmp_path) is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "42,one"], "--seeds: expected comma-separated integers, got '42,one'"),
        (["--folds", "0,7"], "--folds: each fold must be in 0..4, got '0,7'"),
    ],
)
def test_bad_seeds_and_folds_exit_with_one_clear_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        accuracy.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_readme_gets_the_headline_of_every_run(made_up_row, tmp_path):
    from helpers.measure.markdown import replace_section

    rows = [made_up_row, replace(made_up_row, fold=1, test=replace(made_up_row.test, map_50=0.8))]
    readme = tmp_path / "README.md"
    readme.write_text("before\n\n<!-- accuracy:headline:start -->\nold\n<!-- accuracy:headline:end -->\n\nafter\n")
    replace_section(readme, accuracy_report.README_SECTION, accuracy_report.headline(rows))
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("before") and text.rstrip().endswith("after")
    assert "| quick fasterrcnn_efficientnet_lite0_fpn, seed 42 | 0.850 ± 0.071 (0.800-0.900) over 2 fold(s) " in text
    assert "| fold 0: 0.900 [0.80, 0.95], 0.90 [0.80, 0.97] / 0.86 [0.75, 0.95] at 0.55 (31 test images) |" in text


def test_robustness_is_judged_as_the_mean_drop_over_folds(made_up_row):
    def fold(i, jpeg_found):
        counts = dict(made_up_row.robustness, **{"jpeg quality 20": [33, jpeg_found, 6]})
        return replace(made_up_row, fold=i, robustness=counts)

    # Clean finds 30 of 33; a drop of 0.1 is 3.3 boxes. 26 and 27 found: drops 4/33 and 3/33, mean 0.106.
    assert fold_robustness.goal([fold(0, 26), fold(1, 27)])[2] == NOT_MET
    assert fold_robustness.goal([fold(0, 27), fold(1, 27)])[2] == MET  # 3/33 = 0.091 in both
    goal, figure, _ = fold_robustness.goal([fold(0, 26), fold(1, 27)])
    assert figure == "worst mean drop 0.106 (jpeg quality 20); 1 of 2 over"
    text = accuracy_report.markdown([fold(0, 26), fold(1, 27)])
    assert "| jpeg quality 20 | 0.803 (drop 0.106 / 0.121) |" in text  # mean recall (mean drop / worst fold's)
    assert f"| quick {made_up_row.model} seed 42, 2 folds | {goal} | {figure} | {NOT_MET} |" in text


def test_a_run_already_trained_is_measured_again_without_training(trained, tmp_path, monkeypatch):
    """measure_run reuses a folder whose summary.json is today's training of that (mode, model, seed, fold)."""
    out_dir = tmp_path / "quick-lite0-42-fold0"
    out_dir.mkdir()
    (out_dir / "summary.json").write_text(Path(trained.checkpoint).with_name("summary.json").read_text())
    monkeypatch.setattr(accuracy, "train", lambda config: pytest.fail("trained again"))
    measured = []
    monkeypatch.setattr(accuracy, "measure_trained", lambda mode, summary, out: measured.append(summary) or summary)
    assert accuracy.measure_run("quick", "lite0", 42, 0, tmp_path).config_hash == trained.config_hash
    assert measured and measured[0].checkpoint == trained.checkpoint
    retrained = []
    monkeypatch.setattr(accuracy, "train", lambda config: retrained.append(config.fold) or trained)
    accuracy.measure_run("quick", "lite0", 42, 1, tmp_path)  # fold 1 has no run there: trained
    assert retrained == [1]


def test_the_committed_table_is_read_back_fold_by_fold(made_up_row, tmp_path):
    """Notebook 01 places its run among the folds of the committed BENCHMARKS.md table."""
    from helpers.measure.markdown import replace_section

    rows = [replace(made_up_row, fold=i, test=replace(made_up_row.test, map_50=0.8 + i / 100)) for i in range(3)]
    rows.append(replace(made_up_row, seed=1, fold=3))  # another seed: not the default recipe's
    rows.append(replace(made_up_row, mode="full", fold=0, test=replace(made_up_row.test, map_50=0.97)))
    rows.append(replace(made_up_row, model="fasterrcnn_mobilenet_v3_large_320_fpn", fold=1))  # another model
    benchmarks = tmp_path / "BENCHMARKS.md"
    replace_section(benchmarks, accuracy_report.SECTION, accuracy_report.markdown(rows))
    table = accuracy_report.markdown([replace(made_up_row, fold=4)]).splitlines()
    outside = next(line for line in table if line.startswith("| quick | "))
    benchmarks.write_text(benchmarks.read_text() + "\n" + outside + "\n")  # not in the section: not read
    model = made_up_row.model
    assert accuracy_report.committed_test_map_50("quick", model, benchmarks) == {0: 0.8, 1: 0.81, 2: 0.82}
    assert accuracy_report.committed_test_map_50("full", model, benchmarks) == {0: 0.97}


def test_tables_only_rewrites_the_tables_from_the_results_without_training(made_up_row, tmp_path, monkeypatch):
    import json

    row = replace(made_up_row, config_hash=accuracy.current_fingerprint(made_up_row.to_json(), tmp_path))
    (tmp_path / "results.json").write_text(json.dumps([row.to_json()]))
    monkeypatch.setattr(accuracy, "ACCURACY_DIR", tmp_path)
    monkeypatch.setattr(accuracy, "measure_run", lambda *args: pytest.fail("measured again"))
    benchmarks, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    assert accuracy.main(["--tables-only", "--out", str(benchmarks), "--readme", str(readme)]) == 0
    assert f"| quick | {row.model} | 42 | 0 | 143 " in benchmarks.read_text()
