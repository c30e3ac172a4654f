"""Which model ships: the rule, the decision file, and every command's default that reads it."""

import json

import pytest

from helpers import paths
from helpers.data import dataset as fridge_data
from helpers.export import ship


@pytest.mark.parametrize(
    "low, int8, speedup, expected",
    [
        (0.80, 0.80, 1.30, (True, True)),  # on both lines: ships
        (0.80, 0.79, 2.00, (False, True)),  # fast but below FP32's interval
        (0.80, 0.95, 1.29, (True, False)),  # accurate but not fast enough
    ],
)
def test_the_rule_needs_both_accuracy_within_the_interval_and_the_speedup(low, int8, speedup, expected):
    assert ship.int8_qualifies(low, int8, speedup) == expected


def test_two_equal_models_ship_fp32_for_want_of_speed_and_the_decision_round_trips(tmp_path, make_tiny_model):
    fp32 = make_tiny_model(0.3)
    int8 = tmp_path / "model_int8.onnx"
    int8.write_bytes(fp32.read_bytes())  # the same graph: the same figures, no speedup to speak of
    records = fridge_data.load_sample()
    decision = ship.decide(fp32, int8, records, threads=1)
    assert decision.images == 6 and decision.threshold == 0.3
    assert decision.int8_map_50 == pytest.approx(decision.fp32_map_50, abs=1e-12)
    assert decision.difference_interval == [0.0, 0.0]
    assert decision.fp32_map_50_interval[0] <= decision.fp32_map_50 <= decision.fp32_map_50_interval[1]
    qualifies = ship.int8_qualifies(decision.fp32_map_50_interval[0], decision.int8_map_50, decision.speedup)
    assert decision.model == (int8.name if all(qualifies) else fp32.name)
    assert "is not below FP32's interval" in decision.reason
    decision.save(tmp_path / "shipped.json")
    assert ship.ShipDecision.load(tmp_path / "shipped.json") == decision


def test_the_shipped_model_is_the_one_the_decision_names_else_fp32(tmp_path):
    layout = paths.RunArtifacts(tmp_path)
    assert layout.shipped == layout.onnx  # no decision yet: FP32
    layout.ship_decision.write_text(json.dumps({"model": "model_int8.onnx"}))
    assert layout.shipped == layout.int8


def test_deploy_defaults_to_the_shipped_model(tmp_path, monkeypatch):
    from helpers.aws import deploy

    monkeypatch.setenv(paths.ARTIFACTS_VARIABLE, str(tmp_path))
    assert deploy.build_parser().parse_args(["up", "--bucket", "b"]).model == tmp_path / "model.onnx"
    (tmp_path / "shipped.json").write_text(json.dumps({"model": "model_int8.onnx"}))
    assert deploy.build_parser().parse_args(["up", "--bucket", "b"]).model == tmp_path / "model_int8.onnx"
