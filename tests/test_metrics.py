import pytest
import torch

from helpers.config import FRIDGE_CLASSES
from helpers.metrics import mean_average_precision


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}


def _pred(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def test_perfect_predictions_score_one(sample_records):
    targets, preds = [], []
    for r in sample_records:
        labels = [FRIDGE_CLASSES.index(n) + 1 for n in r.labels]
        targets.append(_target(r.boxes, labels))
        preds.append(_pred(r.boxes, [0.9] * len(labels), labels))
    result = mean_average_precision(preds, targets, FRIDGE_CLASSES)
    assert result["map"] == pytest.approx(1.0)
    assert result["map_50"] == pytest.approx(1.0)
    assert {k for k in result if k.startswith("ap/")} == {f"ap/{c}" for c in FRIDGE_CLASSES}


# One class, two ground-truth boxes, one found exactly and one false positive elsewhere.
# COCO interpolates precision at 101 recall points; recall reaches 0.5, so points 0.00..0.50 (51
# of them) carry the interpolated precision and the rest 0.
GT = [[10, 10, 50, 50], [100, 100, 150, 150]]
FAR = [300, 300, 340, 340]


def test_hand_computed_ap_true_positive_ranked_first():
    result = mean_average_precision(
        [_pred([GT[0], FAR], [0.9, 0.8], [1, 1])], [_target(GT, [1, 1])], FRIDGE_CLASSES
    )
    assert result["map"] == pytest.approx(51 / 101, abs=1e-4)  # precision 1 up to recall 0.5
    assert result["ap/carton"] == pytest.approx(51 / 101, abs=1e-4)


def test_hand_computed_ap_false_positive_ranked_first():
    result = mean_average_precision(
        [_pred([FAR, GT[0]], [0.9, 0.8], [1, 1])], [_target(GT, [1, 1])], FRIDGE_CLASSES
    )
    assert result["map_50"] == pytest.approx(0.5 * 51 / 101, abs=1e-4)  # precision 1/2 at recall 0.5
