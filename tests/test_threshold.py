"""The served score threshold: chosen on the validation images after training, carried by the
checkpoint into the ONNX metadata (the handler's default), and what quick mode is judged at."""

import pytest
import torch

from helpers.evaluate.metrics import choose_threshold, threshold_sweep
from helpers.measure.targets import QUICK_SAMPLE_MIN_MAP_50, QUICK_SAMPLE_MINIMUM


def _row(threshold, precision, recall):
    return {"threshold": threshold, "precision": precision, "recall": recall}


def test_the_threshold_is_the_best_f1_and_ties_go_higher():
    rows = [_row(0.3, 0.5, 1.0), _row(0.5, 0.8, 0.8), _row(0.6, 0.8, 0.8), _row(0.7, 1.0, 0.4)]
    assert choose_threshold(rows)["threshold"] == 0.6
    assert choose_threshold(rows)["f1"] == pytest.approx(0.8)
    assert choose_threshold([_row(0.05, 1.0, 0.0)])["f1"] == 0.0  # nothing found: no division by zero


def test_a_sweep_on_real_boxes_picks_the_threshold_that_drops_the_false_detection(sample_records):
    record = sample_records[0]
    truth = torch.tensor(record.boxes, dtype=torch.float32)
    target = {"boxes": truth, "labels": torch.tensor([1, 2])}
    prediction = {
        "boxes": torch.cat([truth, torch.tensor([[0.0, 0.0, 30.0, 30.0]])]),
        "labels": torch.tensor([1, 2, 1]),
        "scores": torch.tensor([0.9, 0.6, 0.4]),
    }
    rows = threshold_sweep([prediction], [target], [0.3, 0.5, 0.7])
    assert [(r["found"], r["false"]) for r in rows] == [(2, 1), (2, 0), (1, 0)]
    assert choose_threshold(rows)["threshold"] == 0.5


def test_export_writes_the_threshold_into_the_metadata_the_runtime_reads(tmp_path):
    from helpers.export.onnx_export import export_onnx, recorded
    from helpers.runtime.classmap import ClassMap
    from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS
    from helpers.runtime.contract import ModelContract
    from helpers.runtime.model import Detector
    from helpers.train.models import SMALL_MODEL, build_detector

    torch.manual_seed(0)
    model, _ = build_detector(SMALL_MODEL, len(FRIDGE_CLASSES) + 1, PREPROCESS.image_size, weights="none")
    contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS, score_threshold=0.45)
    path = export_onnx(model.eval(), tmp_path / "m.onnx", contract, SMALL_MODEL, "none")
    assert recorded(path, "score_threshold") == "0.45"
    assert Detector(path).contract.score_threshold == 0.45
    unset = export_onnx(model, tmp_path / "n.onnx", ModelContract(ClassMap(FRIDGE_CLASSES)), SMALL_MODEL, "none")
    assert recorded(unset, "score_threshold") is None and Detector(unset).contract.score_threshold is None


def test_quick_model_at_its_served_threshold_finds_the_test_objects(trained, onnx_model):
    """The served threshold is chosen on validation and recorded everywhere; the test images, which
    chose nothing, are found at it above the bounds (helpers.measure.targets, two boxes under CI's run)."""
    from helpers.export.onnx_export import recorded
    from helpers.train.module import load_checkpoint

    test, validation = trained.test, trained.validation
    assert test["images"] >= 20 and validation["served_threshold"] == trained.served_threshold
    served = trained.served_threshold
    assert load_checkpoint(trained.checkpoint).run.score_threshold == served
    assert float(recorded(onnx_model, "score_threshold")) == served
    print(
        {k: test[k] for k in ("threshold", "map_50", "recall", "precision", "found", "false")}, test["found_per_image"]
    )
    assert test["threshold"] == served
    assert all(test[figure] >= minimum for figure, minimum in QUICK_SAMPLE_MINIMUM.items()), test
    assert test["map_50"] >= QUICK_SAMPLE_MIN_MAP_50
    assert set(test["found_per_image"]).isdisjoint(validation["found_per_image"])  # the two parts share no image
