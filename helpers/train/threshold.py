"""After training: eager predictions of the kept checkpoint, its mAP, the served score threshold chosen
on the validation images and recorded in the checkpoint (two explicit steps), and the report on the
test images at that threshold."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from helpers.evaluate.intervals import reported_figures
from helpers.evaluate.metrics import (
    THRESHOLD_GRID,
    choose_threshold,
    found_boxes,
    mean_average_precision,
    threshold_sweep,
)
from helpers.train.data import DetectionDataset, collate
from helpers.train.module import RUN_RECORD_KEY, DetectorModule
from helpers.train.transforms import valid_transform


@torch.no_grad()
def predict(module: DetectorModule, records, batch_size: int = 4):
    """Eager predictions on records through the valid transform, boxes in letterboxed pixels,
    plus the targets in the same space (the form torchmetrics wants)."""
    dataset = DetectionDataset(
        records, valid_transform(module.preprocess), module.class_map, module.preprocess.image_size
    )
    predictions, targets = [], []
    module.eval()
    for images, batch_targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        predictions += module(images)
        targets += batch_targets
    return predictions, targets


def evaluate(module: DetectorModule, records) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5 and per-class AP of a trained module on records."""
    predictions, targets = predict(module, records)
    return mean_average_precision(predictions, targets, module.class_map.names)


def choose_served_threshold(module: DetectorModule, unseen) -> dict:
    """The selection record on the validation images: mAP, the sweep over THRESHOLD_GRID, the served
    threshold (metrics.choose_threshold) and its row, and the boxes found per image at it."""
    predictions, targets = predict(module, unseen)
    sweep = threshold_sweep(predictions, targets, THRESHOLD_GRID)
    chosen = choose_threshold(sweep)
    return {
        "images": len(unseen),
        "boxes": sum(len(t["boxes"]) for t in targets),
        **mean_average_precision(predictions, targets, module.class_map.names),
        "served_threshold": chosen["threshold"],
        "at_served_threshold": chosen,
        "found_per_image": {
            r.image_path.name: f"{found_boxes(p, t, chosen['threshold'])}/{len(r.boxes)}"
            for r, p, t in zip(unseen, predictions, targets)
        },
        "threshold_sweep": sweep,
    }


def record_served_threshold(checkpoint_path: str | Path, threshold: float) -> None:
    """Re-save the checkpoint with `threshold` in its run record, from where export writes it into the
    ONNX metadata ("score_threshold")."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    state[RUN_RECORD_KEY]["score_threshold"] = threshold
    torch.save(state, checkpoint_path)


def test_report(module: DetectorModule, test_records, threshold: float) -> dict:
    """The run's result: the test images (which chose nothing) at the served threshold, every figure
    with its bootstrap interval (helpers.evaluate.intervals.reported_figures)."""
    predictions, targets = predict(module, test_records)
    names = [r.image_path.name for r in test_records]
    return reported_figures(predictions, targets, module.class_map.names, threshold, names)
