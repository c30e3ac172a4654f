"""95% bootstrap intervals over images for detection figures, and the paired difference of two models.

With ~30 test boxes one box moves recall by ~3 points, so every figure is reported with the spread it
would have on another draw of images like these: images are resampled with replacement (seeded), each
figure is recomputed on each resample, and the interval is the 2.5th..97.5th percentile.

Everything a figure needs is computed once per image (ImageStatistics), so a resample is a vector of
image weights (how often each image was drawn): recall and precision are weighted sums of per-image
counts, and mAP is COCO's accumulation (pycocotools' accumulate) over detections already matched to
boxes per image (pycocotools' evaluateImg), with each detection weighted by its image's count.
pycocotools itself (helpers.evaluate.metrics.mean_average_precision) costs 45-75 ms per 30 images on
a 2-CPU machine, so 45-75 s per 1000 resamples; this path gives the same numbers to 1e-8
(tests/test_intervals.py compares them on real boxes, resampled sets included) in ~2 s per 1000
resamples of 30 images with 100 detections each (0.2 s with a few each; a paired difference twice that).
Exact score ties between images are ordered by image, as pycocotools orders them for the original set.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from helpers.evaluate.metrics import as_detections, found_boxes, new_metric

_METRIC = new_metric(sync_on_compute=False)
#: COCO's IoU thresholds and recall points exactly as the project's metric passes them to pycocotools
#: (torch's float32 linspace: its 0.2 is just below 0.2, which decides whether a recall of 3/15 reaches it).
IOU_THRESHOLDS = np.array(_METRIC.iou_thresholds, dtype=np.float64)
RECALL_POINTS = np.array(_METRIC.rec_thresholds, dtype=np.float64)
MAX_DETECTIONS = _METRIC.max_detection_thresholds[-1]  # per image and class, COCO's maxDets for mAP
#: Resamples accumulated at once: bounds the (resamples x IoU thresholds x detections) arrays.
CHUNK = 100


@dataclasses.dataclass(frozen=True)
class Interval:
    """A figure on the images as drawn (estimate) and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float


@dataclasses.dataclass(frozen=True)
class Intervals:
    """Named figures ("map", "map_50", "recall", "precision", and per class "ap/<c>", "ap_50/<c>",
    "recall/<c>", "precision/<c>") with their intervals, and how they were drawn."""

    figures: dict[str, Interval]
    images: int
    resamples: int
    seed: int
    confidence: float

    def __getitem__(self, name: str) -> Interval:
        return self.figures[name]

    def to_json(self) -> dict:
        """For summary files: {"figures": {name: {"estimate", "low", "high"}}, "images", ...}."""
        figures = {name: dataclasses.asdict(interval) for name, interval in self.figures.items()}
        return {
            "figures": figures,
            "images": self.images,
            "resamples": self.resamples,
            "seed": self.seed,
            "confidence": self.confidence,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class ImageStatistics:
    """Per-image facts every figure is a weighted sum or accumulation of, computed once.

    Count arrays are (images, classes + 1): column c is class id c, column 0 gathers detections whose
    label is no class (background), which count as false detections. Per class c (index c - 1 of the
    tuples): its detections in COCO's order (by image, then score, best first, at most MAX_DETECTIONS
    per image), the image of each and whether it matched a box at each IoU threshold."""

    class_names: tuple[str, ...]
    threshold: float
    truth: np.ndarray  # boxes per image and class
    kept: np.ndarray  # detections at or above the threshold
    found: np.ndarray  # boxes found at the threshold (helpers.evaluate.metrics.found_boxes)
    detection_image: tuple[np.ndarray, ...]  # per class: [detections] image index
    detection_scores: tuple[np.ndarray, ...]  # per class: [detections] score
    detection_matched: tuple[np.ndarray, ...]  # per class: [IoU thresholds, detections] bool

    @property
    def images(self) -> int:
        return len(self.truth)


def coco_iou(detections: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU [detections, boxes] as pycocotools computes it from torchmetrics' input: xywh in float32,
    then double arithmetic, so matches at a threshold's edge agree with the project's mAP."""
    d, g = (np.asarray(b, np.float32).reshape(-1, 4) for b in (detections, truth))
    d = np.concatenate([d[:, :2], d[:, 2:] - d[:, :2]], axis=1).astype(np.float64)
    g = np.concatenate([g[:, :2], g[:, 2:] - g[:, :2]], axis=1).astype(np.float64)
    w = np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2]) - np.maximum(d[:, None, 0], g[:, 0])
    h = np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3]) - np.maximum(d[:, None, 1], g[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = (d[:, 2] * d[:, 3])[:, None] + (g[:, 2] * g[:, 3])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def coco_matches(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image and class: (detection order, matched [IoU thresholds, detections]) as pycocotools'
    evaluateImg: best score first (stable), at most MAX_DETECTIONS, each detection takes the unmatched
    box of highest IoU >= the threshold (the last such box on an exact tie, as its loop does)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")[:MAX_DETECTIONS]
    iou = coco_iou(np.asarray(boxes)[order], truth)
    matched = np.zeros((len(IOU_THRESHOLDS), len(order)), dtype=bool)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(iou.shape[1], dtype=bool)
        for d in range(len(order)):
            free = np.where(taken, -np.inf, iou[d])
            if free.size and free.max() >= min(threshold, 1 - 1e-10):
                best = free.size - 1 - int(np.argmax(free[::-1]))
                taken[best] = matched[t, d] = True
    return order, matched


def _column(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels, np.int64)
    return np.where((labels >= 1) & (labels <= n_classes), labels, 0)


def image_statistics(predictions, targets, class_names: tuple[str, ...], threshold: float) -> ImageStatistics:
    """predictions: Detections or torchvision-style dicts per image (every score: mAP needs the low
    ones too); targets: {"boxes" xyxy, "labels" class ids 1..K} per image; threshold: the served one."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    k = len(class_names)
    truth, kept, found = (np.zeros((len(targets), k + 1), np.int64) for _ in range(3))
    per_class = [([], [], []) for _ in range(k)]
    for i, (prediction, target) in enumerate(zip(predictions, targets)):
        detections = as_detections(prediction)
        gt_boxes = np.asarray(target["boxes"], np.float64).reshape(-1, 4)
        gt_labels = np.asarray(target["labels"], np.int64).reshape(-1)
        np.add.at(truth[i], _column(gt_labels, k), 1)
        np.add.at(kept[i], _column(detections.above(threshold).labels, k), 1)
        for c in range(1, k + 1):
            mine = detections.take(detections.labels == c)
            boxes = gt_boxes[gt_labels == c]
            found[i, c] = found_boxes(mine, {"boxes": boxes, "labels": np.full(len(boxes), c)}, threshold)
            order, matched = coco_matches(mine.boxes, mine.scores, boxes)
            per_class[c - 1][0].append(np.full(len(order), i))
            per_class[c - 1][1].append(mine.scores[order])
            per_class[c - 1][2].append(matched)
    images, scores, matched = ([], [], [])
    for image_ids, image_scores, image_matched in per_class:
        score = np.concatenate(image_scores)
        order = np.argsort(-score, kind="mergesort")  # pycocotools: images concatenated, then a stable sort
        images.append(np.concatenate(image_ids)[order])
        scores.append(score[order])
        matched.append(np.concatenate(image_matched, axis=1)[:, order])
    return ImageStatistics(
        tuple(class_names), threshold, truth, kept, found, tuple(images), tuple(scores), tuple(matched)
    )


def average_precision(matched: np.ndarray, weights: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """COCO AP [resamples, IoU thresholds] of one class (pycocotools' accumulate, area "all"), each
    detection counted weights[r, d] times; NaN where a resample has no box of the class (COCO's -1).

    Counting a detection w times gives the curve of w copies of it except for the points inside the run
    of copies, which never set an interpolated precision (inside a run of hits precision rises, inside
    a run of misses recall stays), and a weight of 0 repeats the previous point: the same AP."""
    hits = matched[None, :, :] * weights[:, None, :]
    tp = np.cumsum(hits, axis=2)
    fp = np.cumsum(weights[:, None, :] - hits, axis=2)
    recall = tp / np.maximum(positives, 1)[:, None, None]
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[..., ::-1], axis=2)[..., ::-1]
    rows, n = recall.shape[0] * recall.shape[1], recall.shape[2]
    # The precision at each recall point: the first detection reaching it, 0 past the last one.
    where = np.array([np.searchsorted(row, RECALL_POINTS) for row in recall.reshape(rows, n)]).reshape(rows, -1)
    padded = np.concatenate([envelope.reshape(rows, n), np.zeros((rows, 1))], axis=1)
    ap = np.take_along_axis(padded, where, axis=1).mean(axis=1).reshape(recall.shape[:2])
    return np.where(positives[:, None] > 0, ap, np.nan)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), empty)


def figures(stats: ImageStatistics, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every figure for each row of image weights [resamples, images] (a row of ones: the images as
    drawn). Precision with no detection is 1 (threshold_sweep's rule); a class with no box is NaN."""
    weights = np.asarray(weights, np.float64).reshape(-1, stats.images)
    truth, kept, found = (weights @ a for a in (stats.truth, stats.kept, stats.found))
    out = {
        "recall": _ratio(found.sum(1), truth.sum(1), np.nan),
        "precision": _ratio(found.sum(1), kept.sum(1), 1.0),
    }
    aps = []
    for c, name in enumerate(stats.class_names, start=1):
        ap = average_precision(stats.detection_matched[c - 1], weights[:, stats.detection_image[c - 1]], truth[:, c])
        aps.append(ap)
        out[f"ap/{name}"], out[f"ap_50/{name}"] = ap.mean(axis=1), ap[:, 0]
        out[f"recall/{name}"] = _ratio(found[:, c], truth[:, c], np.nan)
        out[f"precision/{name}"] = np.where(truth[:, c] > 0, _ratio(found[:, c], kept[:, c], 1.0), np.nan)
    aps = np.stack(aps, axis=1)  # [resamples, classes, IoU thresholds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no box at all: NaN
        out["map"] = np.nanmean(aps, axis=(1, 2))
        out["map_50"] = np.nanmean(aps[:, :, 0], axis=1)
    return out


def resample_weights(images: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, images]: how often each image is drawn in each resample (with replacement)."""
    draws = np.random.default_rng(seed).integers(0, images, size=(resamples, images))
    weights = np.zeros((resamples, images))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1)
    return weights


def _resampled(stats: ImageStatistics, weights: np.ndarray) -> dict[str, np.ndarray]:
    chunks = [figures(stats, weights[i : i + CHUNK]) for i in range(0, len(weights), CHUNK)]
    return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}


def _intervals(estimates, samples, images, resamples, seed, confidence) -> Intervals:
    tail = 100 * (1 - confidence) / 2
    result = {}
    for name, estimate in estimates.items():
        finite = samples[name][np.isfinite(samples[name])]
        if np.isnan(estimate[0]) or not finite.size:
            continue  # a class with no box among these images has no figure
        low, high = np.percentile(finite, [tail, 100 - tail])
        result[name] = Interval(float(estimate[0]), float(low), float(high))
    return Intervals(result, images, resamples, seed, confidence)


def bootstrap(stats: ImageStatistics, resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> Intervals:
    """Percentile intervals of every figure over `resamples` draws of the images with replacement.
    Resamples in which a class has no box leave that class's figures out (they are undefined)."""
    weights = resample_weights(stats.images, resamples, seed)
    estimates = figures(stats, np.ones(stats.images))
    return _intervals(estimates, _resampled(stats, weights), stats.images, resamples, seed, confidence)


def paired_difference(
    first: ImageStatistics, second: ImageStatistics, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Intervals:
    """Intervals of first - second (e.g. FP32 - INT8) on the same images, both scored on the same
    draws: the images' own difficulty cancels, so the interval is of the models' difference alone."""
    if first.class_names != second.class_names or not np.array_equal(first.truth, second.truth):
        raise ValueError("a paired difference needs both models' statistics on the same images and classes")
    weights = resample_weights(first.images, resamples, seed)
    ones = np.ones(first.images)
    a, b = figures(first, ones), figures(second, ones)
    estimates = {name: a[name] - b[name] for name in a}
    sa, sb = _resampled(first, weights), _resampled(second, weights)
    return _intervals(estimates, {name: sa[name] - sb[name] for name in sa}, first.images, resamples, seed, confidence)


#: The figures reported first, everywhere: on the test images at the served threshold, with intervals.
HEADLINE = ("map", "map_50", "recall", "precision")


def reported_figures(predictions, targets, class_names: tuple[str, ...], threshold: float, names) -> dict:
    """The report of a model on test images (the form summary.json, `helpers evaluate` and the
    accuracy tool share): each figure with its 95% bootstrap interval over images, per class too,
    and the boxes found per image (by file name) at the served threshold."""
    stats = image_statistics(predictions, targets, class_names, threshold)
    intervals = bootstrap(stats)
    found, kept = int(stats.found.sum()), int(stats.kept.sum())
    return {
        "images": stats.images,
        "boxes": int(stats.truth.sum()),
        "threshold": threshold,
        **{name: intervals[name].estimate for name in HEADLINE},
        "found": found,
        "false": kept - found,
        "intervals": {name: [interval.low, interval.high] for name, interval in intervals.figures.items()},
        "per_class": {
            name: intervals[f"ap_50/{name}"].estimate for name in class_names if f"ap_50/{name}" in intervals.figures
        },
        "found_per_image": {
            name: f"{int(stats.found[i].sum())}/{int(stats.truth[i].sum())}" for i, name in enumerate(names)
        },
    }


def with_interval(figures: dict, name: str, digits: int = 3) -> str:
    """'0.912 [0.85, 0.97]': a reported figure and its interval, as every report prints it."""
    low, high = figures["intervals"][name]
    return f"{figures[name]:.{digits}f} [{low:.2f}, {high:.2f}]"
