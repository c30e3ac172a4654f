import pytest
import torch

from helpers.evaluate.metrics import mean_average_precision
from helpers.runtime.config import FRIDGE_CLASSES


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
    result = mean_average_precision([_pred([GT[0], FAR], [0.9, 0.8], [1, 1])], [_target(GT, [1, 1])], FRIDGE_CLASSES)
    assert result["map"] == pytest.approx(51 / 101, abs=1e-4)  # precision 1 up to recall 0.5
    assert result["ap/carton"] == pytest.approx(51 / 101, abs=1e-4)


def test_hand_computed_ap_false_positive_ranked_first():
    result = mean_average_precision([_pred([FAR, GT[0]], [0.9, 0.8], [1, 1])], [_target(GT, [1, 1])], FRIDGE_CLASSES)
    assert result["map_50"] == pytest.approx(0.5 * 51 / 101, abs=1e-4)  # precision 1/2 at recall 0.5


def test_found_boxes_needs_label_iou_and_score_and_counts_each_box_once(sample_records):
    from helpers.evaluate.metrics import found_boxes

    record = next(r for r in sample_records if r.image_path.name == "10.jpg")
    truth = torch.tensor(record.boxes, dtype=torch.float32)
    ids = torch.tensor([FRIDGE_CLASSES.index(name) + 1 for name in record.labels])
    target = {"boxes": truth, "labels": ids}
    other_label = ids % len(FRIDGE_CLASSES) + 1
    shifted = truth[0] + (truth[0, 2] - truth[0, 0]) * torch.tensor([0.6, 0.0, 0.6, 0.0])  # IoU 0.25

    def prediction(boxes, labels, scores):
        return {"boxes": torch.stack(boxes), "labels": torch.tensor(labels), "scores": torch.tensor(scores)}

    exact = prediction([truth[0], truth[1]], [int(ids[0]), int(ids[1])], [0.9, 0.9])
    assert found_boxes(exact, target, min_score=0.3) == 2
    assert found_boxes(exact, target, min_score=0.95) == 0  # below the score asked for
    wrong = prediction([truth[0], truth[1]], [int(other_label[0]), int(other_label[1])], [0.9, 0.9])
    assert found_boxes(wrong, target, min_score=0.3) == 0  # right place, wrong label
    duplicates = prediction([truth[0], truth[0], shifted], [int(ids[0])] * 3, [0.9, 0.8, 0.7])
    assert record.labels[0] != record.labels[1]
    assert found_boxes(duplicates, target, min_score=0.3) == 1  # one box is found once; IoU < 0.5 finds nothing
