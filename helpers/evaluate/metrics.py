"""Accuracy: COCO mAP through torchmetrics (pycocotools backend) — mAP@[.5:.95], mAP@.5 and
per-class AP — of PyTorch predictions or of an ONNX detector end to end, and boxes found per image."""

from __future__ import annotations

import torch
from torchmetrics.detection import MeanAveragePrecision

from helpers.evaluate.matching import match_boxes
from helpers.runtime.detections import Detections


def new_metric(sync_on_compute: bool = True) -> MeanAveragePrecision:
    """sync_on_compute: gather every process's updates (a multi-device validation); off for a
    one-process evaluation, which must not wait for processes that are not computing it."""
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, sync_on_compute=sync_on_compute)


def summarize(metric: MeanAveragePrecision, class_names: tuple[str, ...]) -> dict[str, float]:
    """{"map", "map_50", "ap/<class>"...}; classes absent from the targets get no AP entry."""
    result = metric.compute()
    summary = {"map": float(result["map"]), "map_50": float(result["map_50"])}
    for class_id, ap in zip(result["classes"].reshape(-1).tolist(), result["map_per_class"].reshape(-1)):
        if 1 <= class_id <= len(class_names) and float(ap) >= 0:
            summary[f"ap/{class_names[class_id - 1]}"] = float(ap)
    return summary


def mean_average_precision(
    predictions: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    class_names: tuple[str, ...],
) -> dict[str, float]:
    """predictions: boxes/scores/labels per image; targets: boxes/labels per image (torchvision form);
    computed in this process alone (rank 0 judges the unseen images after a multi-device run)."""
    metric = new_metric(sync_on_compute=False)
    metric.update(predictions, targets)
    return summarize(metric, class_names)


def as_detections(prediction: Detections | dict) -> Detections:
    """Detections as they are, or a torchvision-style prediction (PyTorch's eval output) as Detections."""
    return prediction if isinstance(prediction, Detections) else Detections.from_outputs(prediction)


def found_boxes(prediction: Detections | dict, target: dict, min_score: float, min_iou: float = 0.5) -> int:
    """How many ground-truth boxes of one image a prediction finds: a detection with the same label,
    IoU >= min_iou and score >= min_score, each detection finding at most one box (matched as COCO
    matches, helpers.evaluate.matching)."""
    kept = as_detections(prediction).above(min_score)
    return len(match_boxes(kept, target["boxes"], target["labels"], min_iou).pairs)


def evaluate_detector(detector, records) -> dict[str, float]:
    """COCO mAP of an ONNX Detector end to end (decode -> letterbox -> ORT -> restore) against the
    records' boxes in original pixels: the accuracy the Lambda will serve."""
    predictions, targets = served_predictions(detector, records)
    return mean_average_precision(predictions, targets, detector.class_map.names)


def served_predictions(detector, records) -> tuple[list[dict], list[dict]]:
    """An ONNX Detector's every detection on each record as the Lambda serves it (decode -> letterbox ->
    ORT -> restore), and the records' boxes, both torchvision-style in original pixels."""
    from helpers.runtime.decode import decode_for_model

    predictions, targets = [], []
    for record in records:
        decoded = decode_for_model(record.image_path.read_bytes(), detector.config.image_size)
        detections = detector.predict(decoded, 0.0, 1000).detections
        predictions.append(
            {
                "boxes": torch.tensor(detections.boxes, dtype=torch.float32),
                "scores": torch.tensor(detections.scores, dtype=torch.float32),
                "labels": torch.from_numpy(detections.labels),
            }
        )
        targets.append(
            {
                "boxes": torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([detector.class_map.id(n) for n in record.labels], dtype=torch.int64),
            }
        )
    return predictions, targets


def threshold_sweep(predictions: list[Detections | dict], targets: list[dict], thresholds) -> list[dict]:
    """Per score threshold, over all images: detections kept, boxes found (true positives: same
    label, IoU >= 0.5, one box per detection), boxes missed, false detections, precision, recall."""
    rows = []
    n_truth = sum(len(t["boxes"]) for t in targets)
    for threshold in thresholds:
        kept = sum(len(as_detections(p).above(threshold)) for p in predictions)
        found = sum(found_boxes(p, t, threshold) for p, t in zip(predictions, targets))
        rows.append(
            {
                "threshold": float(threshold),
                "detections": kept,
                "found": found,
                "missed": n_truth - found,
                "false": kept - found,
                "precision": found / kept if kept else 1.0,
                "recall": found / n_truth if n_truth else 1.0,
            }
        )
    return rows


#: The thresholds a run's served threshold is chosen from.
THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def choose_threshold(rows: list[dict]) -> dict:
    """The served threshold from a threshold_sweep on unseen images: the best F1 of precision and
    recall (ties: the higher threshold, fewer false detections for the same F1). F1, not a precision
    floor: with ~30 boxes one floor can sit on a single detection's luck, and users count both misses
    and false boxes."""
    scored = [{**r, "f1": 2 * r["precision"] * r["recall"] / ((r["precision"] + r["recall"]) or 1.0)} for r in rows]
    return max(scored, key=lambda r: (round(r["f1"], 9), r["threshold"]))
