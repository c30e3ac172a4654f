"""helpers accuracy: the training table, its spread over seeds and its targets, from the real quick run."""

import pytest

from helpers.tools import accuracy
from helpers.tools.benchmark.goals import MET, NOT_MET


@pytest.fixture(scope="module")
def row(trained, tmp_path_factory):
    return accuracy.measure_trained("quick", trained, tmp_path_factory.mktemp("accuracy"))


@pytest.fixture
def made_up_row():
    """A row of measure_trained's shape with the quick seed-42 figures in BENCHMARKS.md: what the goal
    and table logic read, without training."""
    return {
        "mode": "quick",
        "model": "fasterrcnn_efficientnet_lite0_fpn",
        "seed": 42,
        "config_hash": "00abe9bb6f0b",
        "dataset": "sample",
        "train_seconds": 143.0,
        "cpu_seconds": 276.0,
        "unseen": {"images": 28, "boxes": 30, "map": 0.506, "map_50": 0.927, "threshold": 0.55}
        | {"recall": 0.90, "precision": 0.84, "found": 27, "false": 5},
        "fridge_valid_found": {"11.jpg": "2/2", "13.jpg": "2/2"},
        "holdout_map_50": 0.755,
        "served": {
            "fp32": {"map": 0.507, "map_50": 0.930},
            "int8_all": {"map": 0.504, "map_50": 0.935},
            "int8_served": {"map": 0.523, "map_50": 0.941},
        },
    }


def test_the_row_is_the_run_and_its_served_models(row, trained):
    unseen = trained["unseen"]
    assert row["seed"] == trained["config"]["seed"] and row["train_seconds"] == trained["seconds"]
    assert (row["unseen"]["found"], row["unseen"]["false"]) == (
        unseen["at_served_threshold"]["found"],
        unseen["at_served_threshold"]["false"],
    )
    # The fixture trains seed 42: its fridge validation photos.
    assert set(row["fridge_valid_found"]) == {"11.jpg", "13.jpg"}
    # The exported model through the Lambda's Detector measures what training measured with PyTorch.
    assert row["served"]["fp32"]["map_50"] == pytest.approx(unseen["map_50"], abs=0.01)
    assert row["served"]["fp32"]["map"] == pytest.approx(unseen["map"], abs=0.01)
    for int8 in ("int8_all", "int8_served"):
        # test_export's INT8 bound: at most 10 mAP@.5 points lost (the worst measured: 3.5)
        assert row["served"]["fp32"]["map_50"] - row["served"][int8]["map_50"] <= 0.10


def test_each_quick_target_is_judged_from_its_figure(made_up_row):
    row = made_up_row

    def status(changed_row, goal_prefix):
        return next(s for goal, _, s in accuracy.run_goals(changed_row) if goal.startswith(goal_prefix))

    slow = dict(row, train_seconds=accuracy.QUICK_MAX_SECONDS + 1)
    fast = dict(row, train_seconds=accuracy.QUICK_MAX_SECONDS)
    assert (status(slow, "training"), status(fast, "training")) == (NOT_MET, MET)
    unseen = row["unseen"]
    weak = dict(row, unseen=dict(unseen, map_50=0.69))
    good = dict(row, unseen=dict(unseen, map_50=0.70))
    assert (status(weak, "mAP@.5"), status(good, "mAP@.5")) == (NOT_MET, MET)
    short = dict(row, unseen=dict(unseen, recall=0.74, precision=0.9))
    imprecise = dict(row, unseen=dict(unseen, recall=0.9, precision=0.69))
    enough = dict(row, unseen=dict(unseen, recall=0.75, precision=0.7))
    assert (status(short, "recall"), status(imprecise, "recall"), status(enough, "recall")) == (NOT_MET, NOT_MET, MET)
    missed = dict(row, fridge_valid_found={"11.jpg": "1/2", "13.jpg": "2/2"})
    found = dict(row, fridge_valid_found={"11.jpg": "2/2", "13.jpg": "2/2"})
    assert (status(missed, "every fridge"), status(found, "every fridge")) == (NOT_MET, MET)
    served = row["served"]
    lost = dict(row, served=dict(served, int8_served=dict(served["fp32"], map=served["fp32"]["map"] - 0.011)))
    kept = dict(row, served=dict(served, int8_served=dict(served["fp32"], map=served["fp32"]["map"] - 0.009)))
    assert (status(lost, "INT8"), status(kept, "INT8")) == (NOT_MET, MET)


def test_full_mode_is_judged_on_cpu_minutes_and_both_maps(made_up_row):
    row = made_up_row
    full = dict(row, mode="full", cpu_seconds=accuracy.FULL_MAX_CPU_MINUTES * 60)
    goals = {goal: s for goal, _, s in accuracy.run_goals(full)}
    assert goals[f"training <= {accuracy.FULL_MAX_CPU_MINUTES} CPU-min"] == MET
    over = dict(full, cpu_seconds=full["cpu_seconds"] + 60)
    assert accuracy.run_goals(over)[0][2] == NOT_MET

    def accuracy_goal(map_50, map_):
        return accuracy.run_goals(dict(full, unseen=dict(row["unseen"], map_50=map_50, map=map_)))[1][2]

    assert accuracy_goal(0.85, 0.55) == MET
    assert accuracy_goal(0.9, 0.549) == NOT_MET  # mAP@.5 alone is not enough
    assert accuracy_goal(0.84, 0.60) == NOT_MET  # nor mAP alone


def test_the_table_gives_every_run_and_the_spread_over_seeds(made_up_row):
    row = made_up_row
    second = dict(row, seed=7, train_seconds=row["train_seconds"] + 10, unseen=dict(row["unseen"], recall=0.5))
    text = accuracy.markdown([row, second])
    assert f"| quick | {row['model']} | sample | {row['seed']} | {row['train_seconds']:.0f} " in text
    assert f"| quick | {row['model']} | sample | 7 | {second['train_seconds']:.0f} " in text
    assert f"train {row['train_seconds']:.0f}-{second['train_seconds']:.0f} s" in text
    assert f"served recall 0.50-{row['unseen']['recall']:.2f}" in text
    assert "one seed per run so far" in accuracy.markdown([row])


def test_a_result_is_kept_only_while_it_describes_todays_recipe(row, tmp_path):
    assert row["config_hash"] == accuracy.current_fingerprint(row, tmp_path)  # the quick run is today's recipe
    assert accuracy.current_fingerprint(dict(row, seed=1), tmp_path) != row["config_hash"]
    assert accuracy.current_fingerprint(dict(row, model="a model this tool does not train"), tmp_path) is None


def test_bad_seeds_exit_with_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        accuracy.main(["--seeds", "42,one"])
    assert exit_info.value.code == 2
    assert "--seeds: expected comma-separated integers, got '42,one'" in capsys.readouterr().err
