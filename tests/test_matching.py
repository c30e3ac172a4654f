"""The one greedy box matcher (helpers.evaluate.matching), on the bundled sample's real boxes."""

import numpy as np

from helpers.evaluate.matching import greedy_pairs, iou_matrix, match_boxes
from helpers.runtime.config import FRIDGE_CLASSES
from helpers.runtime.detections import Detections


def _truth(record):
    return np.asarray(record.boxes, dtype=np.float64), np.array([FRIDGE_CLASSES.index(n) + 1 for n in record.labels])


def test_every_exact_copy_finds_its_own_box_in_any_order(sample_records):
    for record in sample_records:
        boxes, labels = _truth(record)
        order = np.arange(len(boxes))[::-1]
        detections = Detections(boxes[order], np.linspace(0.9, 0.5, len(boxes)), labels[order])
        matching = match_boxes(detections, boxes, labels)
        assert sorted(matching.pairs) == sorted(zip(range(len(boxes)), order.tolist()))
        assert matching.rows == [] and matching.columns == []


def test_score_order_decides_who_claims_a_box_not_the_best_overlap(sample_records):
    """COCO's rule: the higher-scored detection takes the box even when a lower-scored one fits better;
    without a row order (two models' outputs) the best overlap pairs first."""
    boxes, labels = _truth(sample_records[0])
    box, label = boxes[:1], labels[:1]
    loose = box[0] + np.array([0.0, 0.0, -0.2, 0.0]) * (box[0, 2] - box[0, 0])  # IoU 0.8
    detections = Detections(np.stack([loose, box[0]]), [0.9, 0.8], [label[0], label[0]])
    assert iou_matrix(detections.boxes, box)[:, 0].round(3).tolist() == [0.8, 1.0]
    assert match_boxes(detections, box, label) == ([(0, 0)], [1], [])
    assert greedy_pairs(-iou_matrix(detections.boxes, box), -0.5) == ([(1, 0)], [0], [])


def test_labels_bound_the_match_unless_asked_otherwise(sample_records):
    boxes, labels = _truth(sample_records[0])
    wrong = labels % len(FRIDGE_CLASSES) + 1
    detections = Detections(boxes, np.full(len(boxes), 0.9), wrong)
    assert match_boxes(detections, boxes, labels).pairs == []
    assert sorted(match_boxes(detections, boxes, labels, same_label=False).pairs) == [(i, i) for i in range(len(boxes))]


def test_an_overlap_below_the_bound_and_empty_sides_match_nothing(sample_records):
    boxes, labels = _truth(sample_records[0])
    width = boxes[0, 2] - boxes[0, 0]
    shifted = boxes[:1] + np.array([0.6, 0.0, 0.6, 0.0]) * width  # IoU 0.25
    assert match_boxes(Detections(shifted, [0.9], labels[:1]), boxes[:1], labels[:1]) == ([], [0], [0])
    assert match_boxes(Detections(shifted, [0.9], labels[:1]), boxes[:1], labels[:1], min_iou=0.2).pairs == [(0, 0)]
    none = Detections(np.zeros((0, 4)), [], [])
    assert match_boxes(none, boxes, labels) == ([], [], list(range(len(boxes))))
    assert match_boxes(Detections(boxes, np.ones(len(boxes)), labels), np.zeros((0, 4)), []).rows == [0, 1]


def test_equal_costs_go_to_the_lower_index_and_nan_never_pairs():
    assert greedy_pairs(np.array([[1.0, 1.0], [1.0, 1.0]]), 1.0) == ([(0, 0), (1, 1)], [], [])
    assert greedy_pairs(np.array([[np.nan, 0.5]]), 1.0) == ([(0, 1)], [], [0])
    assert greedy_pairs(np.array([[0.2, 0.1], [0.0, 0.3]]), 1.0, row_order=[0, 1]) == ([(0, 1), (1, 0)], [], [])
