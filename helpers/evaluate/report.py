"""Evaluation a user can act on: the served pipeline over a labelled set, written as five files.

    python -m helpers evaluate [--model MODEL.onnx] [--dataset sample|fridge|DIR] [--threshold T] [--out DIR] [--full]

Default: the shipped model of quick mode (full mode's with --full) on the run's test images (split.json:
they chose nothing), at the model's served threshold; every headline figure with its 95% bootstrap
interval over images. On the run's test images it also measures robustness (recall and precision under
mirroring, brightness, JPEG re-compression, scaling and EXIF rotation) and false detections on images
with no fridge object (crops of the fridge photos away from every box). Writes to OUT (default
artifacts/<mode>/evaluation/):
  predictions.json      COCO results (image_id, category_id, bbox [x, y, w, h], score), every score
  ground_truth.json     the same images and boxes as a COCO dataset (pycocotools loads both)
  per_class.csv         AP, AP@0.5 (pycocotools) and, at the threshold, found / missed / false, recall, precision
  confusion_matrix.png  true class x predicted class at IoU >= 0.5, with a background row and column
  pr_curves.png         precision-recall per class at IoU 0.5 (pycocotools' interpolated curves)
  robustness.md         the robustness table and the empty images (the run's test images only)
  summary.json          the figures above for the whole set
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from helpers.data.dataset import Split, resolve_dataset
from helpers.data.empty import empty_records
from helpers.data.formats.coco import coco_instances, xywh
from helpers.data.records import AnnotationError, Record
from helpers.evaluate.intervals import reported_figures, with_interval
from helpers.evaluate.matching import match_boxes
from helpers.evaluate.metrics import threshold_sweep
from helpers.evaluate.robustness import (
    MAX_FALSE_PER_EMPTY_IMAGE,
    MAX_RECALL_DROP,
    empty_images,
    format_table,
    robustness,
    served,
)
from helpers.paths import SAMPLE_DIR, not_found, run_artifacts, shown
from helpers.runtime.contract import served_threshold
from helpers.runtime.decode import decode_for_model
from helpers.runtime.detections import Detections
from helpers.runtime.model import Detector, ModelError

BACKGROUND = "background"
OUTPUTS = (
    "predictions.json",
    "ground_truth.json",
    "per_class.csv",
    "confusion_matrix.png",
    "pr_curves.png",
    "summary.json",
)


def predict_all(detector: Detector, records: list[Record]) -> list[Detections]:
    """Every detection the served pipeline returns (threshold 0), boxes in original pixels."""
    return [
        detector.predict(decode_for_model(r.image_path.read_bytes(), detector.config.image_size), 0.0, 1000).detections
        for r in records
    ]


def targets_of(records: list[Record], detector: Detector) -> list[dict[str, np.ndarray]]:
    unknown = sorted({n for r in records for n in r.labels} - set(detector.class_map.names))
    if unknown:
        raise AnnotationError(f"labels the model does not know: {', '.join(unknown)}")
    return [
        {
            "boxes": np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4),
            "labels": np.array([detector.class_map.id(n) for n in r.labels], dtype=np.int64),
        }
        for r in records
    ]


def coco_files(records, targets, predictions, class_names) -> tuple[dict, list[dict]]:
    """(COCO dataset of the ground truth, COCO results of the predictions); image ids 1..N in order."""
    images = [(r.image_path.name, r.width, r.height, t["boxes"], t["labels"]) for r, t in zip(records, targets)]
    results = [
        {"image_id": i, "category_id": int(label), "bbox": xywh(box), "score": float(score)}
        for i, p in enumerate(predictions, 1)
        for box, score, label in zip(p.boxes, p.scores, p.labels)
    ]
    return coco_instances(images, class_names), results


def coco_evaluation(ground_truth: dict, results: list[dict]) -> COCOeval:
    """pycocotools' bbox evaluation, its console output swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = ground_truth
        truth.createIndex()
        detections = truth.loadRes(results) if results else COCO()
        evaluation = COCOeval(truth, detections, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def per_class_ap(evaluation: COCOeval, class_id: int) -> tuple[float, float]:
    """(AP over IoU .5:.95, AP at IoU .5) of one class; NaN where the class has no ground truth."""
    precision = evaluation.eval["precision"][:, :, class_id - 1, 0, -1]  # [IoU, recall], all areas, 100 dets
    valid = precision[precision > -1]
    at_50 = precision[0][precision[0] > -1]
    return (float(valid.mean()) if valid.size else float("nan"), float(at_50.mean()) if at_50.size else float("nan"))


def confusion_matrix(targets, predictions, threshold: float, num_classes: int, min_iou: float = 0.5) -> np.ndarray:
    """[true, predicted] counts over classes 1..C and background (index 0). Boxes and detections at or
    above `threshold` are matched as COCO matches at IoU >= min_iou whatever the labels (so a box found
    with the wrong label shows as a confusion, not a miss plus a false alarm); unmatched boxes count as
    (class, background), unmatched detections as (background, class)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for target, prediction in zip(targets, predictions):
        kept = prediction.above(threshold)
        truth_labels = np.asarray(target["labels"]).reshape(-1)
        pairs, false, missed = match_boxes(kept, target["boxes"], truth_labels, min_iou, same_label=False)
        for i, j in pairs:
            matrix[truth_labels[j], kept.labels[i]] += 1
        for i in false:
            matrix[0, kept.labels[i]] += 1
        for j in missed:
            matrix[truth_labels[j], 0] += 1
    return matrix


def per_class_rows(evaluation, targets, predictions, threshold: float, class_names) -> list[dict]:
    rows = []
    for class_id, name in enumerate(class_names, 1):
        of_class = [{k: v[t["labels"] == class_id] for k, v in t.items()} for t in targets]
        (at,) = threshold_sweep([p.take(p.labels == class_id) for p in predictions], of_class, [threshold])
        ap, ap50 = per_class_ap(evaluation, class_id)
        boxes = sum(int((t["labels"] == class_id).sum()) for t in targets)
        rows.append(
            {
                "class": name,
                "boxes": boxes,
                "ap": ap,
                "ap_50": ap50,
                "found": at["found"],
                "missed": at["missed"],
                "false": at["false"],
                "recall": at["recall"],
                "precision": at["precision"],
            }
        )
    return rows


def plot_confusion(matrix: np.ndarray, class_names, threshold: float) -> Figure:
    names = [BACKGROUND, *class_names]
    fig = Figure(figsize=(6, 5), dpi=120)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted (background: a box missed)")
    ax.set_ylabel("true (background: a false detection)")
    ax.set_title(f"confusion at score >= {threshold:g}, IoU >= 0.5")
    fig.tight_layout()
    return fig


def plot_pr_curves(evaluation: COCOeval, class_names) -> Figure:
    recall = evaluation.params.recThrs
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.subplots()
    for class_id, name in enumerate(class_names, 1):
        precision = evaluation.eval["precision"][0, :, class_id - 1, 0, -1]  # IoU 0.5, all areas, 100 dets
        if (precision > -1).any():
            ax.plot(
                recall, np.clip(precision, 0, None), label=f"{name} (AP@0.5 {precision[precision > -1].mean():.2f})"
            )
    ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_xlim(0, 1), ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall at IoU 0.5 (pycocotools)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


@dataclasses.dataclass
class Assessment:
    """Every figure of an evaluation at one threshold, from predictions and targets in the same pixels
    (original, or letterboxed: IoU and AP do not change under the letterbox's scale and shift)."""

    class_names: tuple[str, ...]
    threshold: float
    ground_truth: dict
    results: list[dict]
    coco: COCOeval
    per_class: list[dict]
    confusion: np.ndarray
    overall: dict
    per_image: list[dict]

    @property
    def map(self) -> float:
        return float(self.coco.stats[0])

    @property
    def map_50(self) -> float:
        return float(self.coco.stats[1])

    def worst_images(self, n: int) -> list[int]:
        """Indices of the n images with the most mistakes (missed + false) at the threshold, worst first."""
        mistakes = [row["missed"] + row["false"] for row in self.per_image]
        return sorted((i for i, m in enumerate(mistakes) if m), key=lambda i: -mistakes[i])[:n]


def assess(records, targets, predictions: list[Detections], class_names, threshold: float) -> Assessment:
    ground_truth, results = coco_files(records, targets, predictions, class_names)
    coco = coco_evaluation(ground_truth, results)
    (overall,) = threshold_sweep(predictions, targets, [threshold])
    return Assessment(
        tuple(class_names),
        threshold,
        ground_truth,
        results,
        coco,
        per_class_rows(coco, targets, predictions, threshold, class_names),
        confusion_matrix(targets, predictions, threshold, len(class_names)),
        overall,
        [threshold_sweep([p], [t], [threshold])[0] for p, t in zip(predictions, targets)],
    )


def evaluate(
    detector: Detector, records: list[Record], threshold: float, out: Path, described: str, robust: bool = False
) -> dict:
    """Run the served pipeline over `records`, write the OUTPUTS into `out`, return the summary; with
    `robust`, the robustness table and the empty images too."""
    if not records:
        raise AnnotationError(f"{described}: no images to evaluate")
    names = detector.class_map.names
    targets, predictions = targets_of(records, detector), predict_all(detector, records)
    result = assess(records, targets, predictions, names, threshold)
    reported = reported_figures(predictions, targets, names, threshold, [r.image_path.name for r in records])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth.json").write_text(json.dumps(result.ground_truth))
    (out / "predictions.json").write_text(json.dumps(result.results))
    with open(out / "per_class.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result.per_class[0]))
        writer.writeheader()
        writer.writerows(
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in result.per_class
        )
    plot_confusion(result.confusion, names, threshold).savefig(out / "confusion_matrix.png")
    plot_pr_curves(result.coco, names).savefig(out / "pr_curves.png")
    overall = result.overall
    summary = {
        "model": shown(detector.path),
        "images": described,
        "image_count": len(records),
        "boxes": overall["found"] + overall["missed"],
        "threshold": threshold,
        "map": result.map,
        "map_50": result.map_50,
        **{k: overall[k] for k in ("found", "missed", "false", "recall", "precision")},
        "intervals": reported["intervals"],
        "confusion": {"labels": [BACKGROUND, *names], "matrix": result.confusion.tolist()},
    }
    if robust:
        summary["robustness"] = robustness_of(detector, records, threshold, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def robustness_of(detector: Detector, records: list[Record], threshold: float, out: Path) -> dict:
    """The robustness table on `records` and the false detections on the empty crops of the 6 fridge
    photos, written to out/robustness.md; the crops of photos that trained were seen as background in
    training, so the crops of the test photos are also counted alone."""
    sample_tested = {r.image_path.stem for r in records if r.image_path.parent == SAMPLE_DIR / "images"}
    empty = empty_records(out / "empty")
    unseen_empty = [r for r in empty if r.image_path.name.split("_empty_")[0] in sample_tested]
    detect = served(detector, threshold)
    table = robustness(detect, records, detector.class_map, threshold, empty=empty)
    unseen = empty_images(detect, unseen_empty, threshold) if unseen_empty else None
    text = format_table(table)
    if unseen:
        text += f"\n\nEmpty crops of the test photos alone: {unseen.false} false detections on {unseen.images} images."
    (out / "robustness.md").write_text(text + "\n")
    return {
        "rows": [dataclasses.asdict(row) for row in table.rows],
        "recall_drops": table.recall_drops(),
        "empty": {
            "images": table.empty.images,
            "false": table.empty.false,
            "per_image": dataclasses.asdict(table.empty.per_image),
            "test_photo_crops": {"images": unseen.images, "false": unseen.false} if unseen else None,
        },
    }


def records_to_evaluate(dataset: str | None, full: bool = False) -> tuple[list[Record], str]:
    """The run's test images (split.json; full mode's with `full`) by default, else every image of
    `dataset`."""
    if dataset is None:
        split_path = run_artifacts(quick=False if full else None).split
        if not split_path.is_file():
            raise FileNotFoundError(f"{not_found('split record', split_path)}; or pass --dataset")
        records = Split.read(split_path).evaluation()
        return records, f"{len(records)} test images of the run ({shown(split_path)})"
    source = resolve_dataset(dataset)
    return source.records, f"every image of {source.describe()}"


def format_summary(summary: dict) -> str:
    """One paragraph: the headline figures with their 95% intervals, then robustness when measured."""
    shown_ = {name: with_interval(summary, name) for name in ("map", "map_50", "recall", "precision")}
    text = (
        f"{summary['images']}: {summary['boxes']} boxes; COCO mAP {shown_['map']}, mAP@0.5 {shown_['map_50']}; "
        f"at score >= {summary['threshold']:g}: found {summary['found']}, missed {summary['missed']}, "
        f"false {summary['false']} (recall {shown_['recall']}, precision {shown_['precision']}; 95% intervals)"
    )
    if "robustness" in summary:
        drops = summary["robustness"]["recall_drops"]
        empty = summary["robustness"]["empty"]
        worst = max(drops, key=drops.get)
        over = [name for name, drop in drops.items() if drop > MAX_RECALL_DROP]
        per_image = empty["false"] / max(1, empty["images"])
        text += (
            f"\nrobustness: the largest recall drop is {drops[worst]:+.2f} ({worst}); "
            f"{len(over)} of {len(drops)} perturbations drop recall by more than {MAX_RECALL_DROP}; "
            f"{per_image:.2f} false detections per image with no fridge object ({empty['images']} images, "
            f"target <= {MAX_FALSE_PER_EMPTY_IMAGE})"
        )
    return text


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    layout = run_artifacts(quick=False if "--full" in argv else None)
    parser = argparse.ArgumentParser(prog="python -m helpers evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=layout.shipped, help="default: the shipped model")
    parser.add_argument("--dataset", help="sample, fridge or a dataset folder (default: the run's test images)")
    parser.add_argument("--threshold", type=float, help="default: the model's served threshold")
    parser.add_argument("--out", type=Path, default=layout.root / "evaluation")
    parser.add_argument("--full", action="store_true", help="full mode's artefacts (default: quick, as `make run`)")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: {not_found('model', args.model)}", file=sys.stderr)
        return 2
    try:
        detector = Detector(args.model)
        threshold = served_threshold(args.threshold, None, detector.contract.score_threshold)
        records, described = records_to_evaluate(args.dataset, args.full)
        summary = evaluate(detector, records, threshold, args.out, described, robust=args.dataset is None)
    except (ModelError, AnnotationError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    written = OUTPUTS + (("robustness.md",) if "robustness" in summary else ())
    print(f"wrote {', '.join(written)} to {shown(args.out)}")
    return 0
