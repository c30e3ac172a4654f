"""COCO mAP through torchmetrics (pycocotools backend): mAP@[.5:.95], mAP@.5 and per-class AP."""

from __future__ import annotations

import torch
from torchmetrics.detection import MeanAveragePrecision


def new_metric() -> MeanAveragePrecision:
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)


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
    """predictions: boxes/scores/labels per image; targets: boxes/labels per image (torchvision form)."""
    metric = new_metric()
    metric.update(predictions, targets)
    return summarize(metric, class_names)
