"""Greedy one-to-one box matching, the one core behind the boxes a detector finds (metrics), the
confusion matrix (report) and the pairing of two models' detections (helpers.export.compare)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torchvision.ops import box_iou

from helpers.runtime.detections import Detections


class Matching(NamedTuple):
    """The pairs (row, column) in the order taken, then the unpaired rows and columns in index order."""

    pairs: list[tuple[int, int]]
    rows: list[int]
    columns: list[int]


def iou_matrix(a, b) -> np.ndarray:
    """IoU [len(a), len(b)] of two sets of xyxy boxes (arrays, tensors or lists), in float64."""
    as_boxes = lambda boxes: torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)  # noqa: E731
    return box_iou(as_boxes(a), as_boxes(b)).numpy()


def greedy_pairs(cost: np.ndarray, limit: float, row_order=None) -> Matching:
    """One-to-one pairs (i, j) with cost[i, j] <= limit, taken greedily: the cheapest pair of the whole
    matrix first; or, given `row_order` (row indices, first served first), row by row, each row taking
    its cheapest free column. Equal costs go to the lower (row, column) index; NaN never pairs."""
    cost = np.asarray(cost, dtype=np.float64)
    rows, columns = np.nonzero(cost <= limit)  # row-major, so stable sorts below break ties by index
    order = np.argsort(cost[rows, columns], kind="stable")
    if row_order is not None:
        rank = np.empty(cost.shape[0], dtype=np.int64)
        rank[np.asarray(row_order, dtype=np.int64)] = np.arange(cost.shape[0])
        order = order[np.argsort(rank[rows[order]], kind="stable")]
    pairs, used_rows, used_columns = [], set(), set()
    for i, j in zip(rows[order].tolist(), columns[order].tolist()):
        if i not in used_rows and j not in used_columns:
            pairs.append((i, j))
            used_rows.add(i)
            used_columns.add(j)
    return Matching(
        pairs,
        [i for i in range(cost.shape[0]) if i not in used_rows],
        [j for j in range(cost.shape[1]) if j not in used_columns],
    )


def match_boxes(detections: Detections, boxes, labels, min_iou: float = 0.5, same_label: bool = True) -> Matching:
    """COCO's matching of one image's detections (rows) to its ground-truth boxes (columns): detections
    by descending score, each taking the free box it overlaps most at IoU >= min_iou, of its own label
    unless `same_label` is False (the confusion matrix: a box found with the wrong label is a confusion,
    not a miss plus a false alarm). Each box is found once, so one big box cannot count for several."""
    cost = -iou_matrix(detections.boxes, boxes)
    if same_label:
        cost[detections.labels[:, None] != np.asarray(labels, dtype=np.int64).reshape(1, -1)] = np.inf
    return greedy_pairs(cost, -min_iou, np.argsort(-detections.scores, kind="stable"))
