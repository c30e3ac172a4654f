"""Model outputs (in letterboxed input pixels) -> JSON-safe detections in original image pixels."""

from __future__ import annotations

import numpy as np

from helpers.runtime.classmap import ClassMap
from helpers.runtime.preprocess import Letterbox


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
    class_map: ClassMap,
    score_threshold: float,
    max_detections: int,
) -> list[dict]:
    """torchvision-style (boxes [N,4] xyxy, scores [N], labels [N]) -> sorted list of
    {"label", "score", "box": [x1, y1, x2, y2]} with plain Python floats (json.dumps-safe).

    Boxes are rounded to 0.01 px and scores to 1e-5: finer digits are noise and only grow the body.
    Boxes that lie entirely in the padding have no area once clipped to the image and are dropped.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if not (len(scores) == len(labels) == np.asarray(boxes).reshape(-1, 4).shape[0]):
        raise ValueError("boxes, scores and labels disagree in length")
    keep = np.flatnonzero(scores >= score_threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    restored = restore_boxes(np.asarray(boxes).reshape(-1, 4)[keep], geometry)
    has_area = (restored[:, 2] > restored[:, 0]) & (restored[:, 3] > restored[:, 1])
    keep, restored = keep[has_area][:max_detections], restored[has_area][:max_detections]
    return [
        {
            "label": class_map.name(int(labels[i])),
            "score": round(float(scores[i]), 5),
            "box": [round(float(v), 2) for v in box],
        }
        for i, box in zip(keep, restored)
    ]
