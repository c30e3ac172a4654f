"""Model outputs (in letterboxed input pixels) -> Detections in original image pixels."""

from __future__ import annotations

import numpy as np

from helpers.runtime.detections import Detections
from helpers.runtime.geometry import Letterbox


def restore_boxes(boxes: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """Undo the letterbox per axis: remove the pad offset, divide by that axis' scale, clip.

    The blog post subtracted half the *total* padding and swapped the axes for portrait images.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(boxes)
    out[:, 0::2] = (boxes[:, 0::2] - geometry.pad_left) / geometry.scale_x
    out[:, 1::2] = (boxes[:, 1::2] - geometry.pad_top) / geometry.scale_y
    np.clip(out[:, 0::2], 0, geometry.orig_width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, geometry.orig_height, out=out[:, 1::2])
    return out


def letterbox_boxes(boxes: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """Original image pixels -> letterboxed input pixels (what training's transform does to boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.empty_like(boxes)
    out[:, 0::2] = boxes[:, 0::2] * geometry.scale_x + geometry.pad_left
    out[:, 1::2] = boxes[:, 1::2] * geometry.scale_y + geometry.pad_top
    return out


def to_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    geometry: Letterbox,
    score_threshold: float,
    max_detections: int,
) -> Detections:
    """torchvision-style model outputs (boxes [N,4] xyxy in input pixels, scores [N], labels [N]) ->
    Detections in original image pixels, at least `score_threshold`, best first, at most `max_detections`.

    Boxes that lie entirely in the padding have no area once clipped to the image and are dropped.
    """
    found = Detections(boxes, scores, labels).above(score_threshold)
    found = found.take(np.argsort(-found.scores, kind="stable"))
    restored = Detections(restore_boxes(found.boxes, geometry), found.scores, found.labels)
    has_area = (restored.boxes[:, 2] > restored.boxes[:, 0]) & (restored.boxes[:, 3] > restored.boxes[:, 1])
    return restored.take(np.flatnonzero(has_area)[:max_detections])
