"""Bootstrap intervals on the bundled real boxes (the 134 object photos and the 6 fridge photos), with
made-up predictions near those boxes: no model, no training."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from helpers.data.dataset import load_sample, object_photos
from helpers.evaluate import intervals
from helpers.evaluate.metrics import mean_average_precision, threshold_sweep
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES
from helpers.runtime.detections import Detections

CLASSES = ClassMap(FRIDGE_CLASSES)
THRESHOLD = 0.5


@pytest.fixture(scope="module")
def records():
    return load_sample() + object_photos()


def targets_of(records):
    return [
        {
            "boxes": np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4),
            "labels": np.array([CLASSES.id(n) for n in r.labels], dtype=np.int64),
        }
        for r in records
    ]


def made_up(targets, seed=0):
    """Per image: most boxes found (jittered, sometimes the wrong class), a few false boxes, every score."""
    rng = np.random.default_rng(seed)
    out = []
    for target in targets:
        boxes, scores, labels = [], [], []
        for box, label in zip(target["boxes"], target["labels"]):
            if rng.random() < 0.85:
                size = np.tile(box[2:] - box[:2], 2)
                boxes.append(box + rng.normal(0, 0.06, 4) * size)
                scores.append(rng.uniform(0.3, 1.0))
                labels.append(label if rng.random() < 0.9 else rng.integers(1, 5))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 60, 2)
            boxes.append([x, y, x + rng.uniform(20, 50), y + rng.uniform(20, 50)])
            scores.append(rng.uniform(0.0, 0.7))
            labels.append(rng.integers(1, 5))
        out.append(Detections(np.reshape(boxes, (-1, 4)), scores, labels))
    return out


def as_torch(predictions, targets):
    preds = [
        {
            "boxes": torch.tensor(p.boxes, dtype=torch.float32),
            "scores": torch.tensor(p.scores, dtype=torch.float32),
            "labels": torch.tensor(p.labels),
        }
        for p in predictions
    ]
    truth = [
        {"boxes": torch.tensor(t["boxes"], dtype=torch.float32), "labels": torch.tensor(t["labels"])} for t in targets
    ]
    return preds, truth


def float32_scores(predictions):
    """Scores as the project's metric sees them (float32), so both paths rank the same numbers."""
    return [Detections(p.boxes, p.scores.astype(np.float32), p.labels) for p in predictions]


def test_figures_equal_the_projects_map_and_threshold_sweep(records):
    targets = targets_of(records)
    predictions = float32_scores(made_up(targets))
    stats = intervals.image_statistics(predictions, targets, FRIDGE_CLASSES, THRESHOLD)
    rng = np.random.default_rng(3)
    for draw in [np.arange(len(records))] + [rng.integers(0, len(records), len(records)) for _ in range(3)]:
        weights = np.bincount(draw, minlength=len(records))
        ours = intervals.figures(stats, weights)
        reference = mean_average_precision(
            *as_torch([predictions[i] for i in draw], [targets[i] for i in draw]), FRIDGE_CLASSES
        )
        for name, value in reference.items():
            assert ours[name][0] == pytest.approx(value, abs=1e-6), name
        sweep = threshold_sweep([predictions[i] for i in draw], [targets[i] for i in draw], [THRESHOLD])[0]
        assert ours["recall"][0] == pytest.approx(sweep["recall"])
        assert ours["precision"][0] == pytest.approx(sweep["precision"])


def test_intervals_contain_the_estimate(records):
    targets = targets_of(records)
    stats = intervals.image_statistics(made_up(targets), targets, FRIDGE_CLASSES, THRESHOLD)
    result = intervals.bootstrap(stats, resamples=300, seed=1)
    assert {"map", "map_50", "recall", "precision", "ap/can", "ap_50/can", "recall/can", "precision/can"} <= set(
        result.figures
    )
    for name, interval in result.figures.items():
        assert interval.low <= interval.estimate <= interval.high, name
        assert interval.low < interval.high, name
    assert (result.images, result.resamples, result.seed, result.confidence) == (len(records), 300, 1, 0.95)
    as_json = json.loads(json.dumps(result.to_json()))
    assert as_json["figures"]["map"] == dataclasses.asdict(result["map"]) and as_json["resamples"] == 300


def test_a_perfect_prediction_gives_one_to_one(records):
    targets = targets_of(records)
    perfect = [Detections(t["boxes"], np.full(len(t["labels"]), 0.9), t["labels"]) for t in targets]
    result = intervals.bootstrap(intervals.image_statistics(perfect, targets, FRIDGE_CLASSES, THRESHOLD), 200)
    for name, interval in result.figures.items():
        assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0), name


def test_a_seed_gives_the_same_interval_and_another_seed_another(records):
    targets = targets_of(records)
    stats = intervals.image_statistics(made_up(targets), targets, FRIDGE_CLASSES, THRESHOLD)
    first, again = intervals.bootstrap(stats, 200, seed=7), intervals.bootstrap(stats, 200, seed=7)
    assert first == again
    assert intervals.bootstrap(stats, 200, seed=8).figures["map"] != first.figures["map"]


def test_the_paired_difference_of_a_model_with_itself_is_exactly_zero(records):
    targets = targets_of(records)
    predictions = made_up(targets)
    a = intervals.image_statistics(predictions, targets, FRIDGE_CLASSES, THRESHOLD)
    b = intervals.image_statistics(list(predictions), targets, FRIDGE_CLASSES, THRESHOLD)
    for name, interval in intervals.paired_difference(a, b, 200).figures.items():
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0), name


def test_the_paired_difference_sees_a_worse_model_and_narrower_than_unpaired(records):
    """A second model that loses each found box's score on a tenth of the images: the paired interval
    is of the loss alone, narrower than either model's own interval."""
    targets = targets_of(records)
    good = made_up(targets)
    worse = [Detections(p.boxes, p.scores * (0.3 if i % 10 == 0 else 1.0), p.labels) for i, p in enumerate(good)]
    a, b = (intervals.image_statistics(p, targets, FRIDGE_CLASSES, THRESHOLD) for p in (good, worse))
    difference = intervals.paired_difference(a, b, 300)["recall"]
    assert 0 < difference.low <= difference.estimate <= difference.high
    own = intervals.bootstrap(a, 300)["recall"]
    assert difference.high - difference.low < own.high - own.low


def test_the_paired_difference_needs_the_same_images(records):
    targets = targets_of(records)
    predictions = made_up(targets)
    a = intervals.image_statistics(predictions, targets, FRIDGE_CLASSES, THRESHOLD)
    b = intervals.image_statistics(predictions[:-1], targets[:-1], FRIDGE_CLASSES, THRESHOLD)
    with pytest.raises(ValueError, match="same images"):
        intervals.paired_difference(a, b, 10)


def test_intervals_narrow_with_more_images(records):
    """30 vs all 140 real images, the same kind of predictions: every headline interval narrows."""
    photos = object_photos()
    rng = np.random.default_rng(0)
    few = [photos[i] for i in sorted(rng.choice(len(photos), 30, replace=False))]
    widths = []
    for chosen in (few, records):
        targets = targets_of(chosen)
        stats = intervals.image_statistics(made_up(targets), targets, FRIDGE_CLASSES, THRESHOLD)
        result = intervals.bootstrap(stats, 500, seed=2)
        widths.append({name: result[name].high - result[name].low for name in ("map", "map_50", "recall", "precision")})
    for name in widths[0]:
        assert widths[1][name] < widths[0][name], name


def test_a_class_absent_from_the_images_has_no_figures(records):
    cans = [r for r in records if r.labels == ["can"]]
    targets = targets_of(cans)
    result = intervals.bootstrap(intervals.image_statistics(made_up(targets), targets, FRIDGE_CLASSES, THRESHOLD), 50)
    assert "ap/can" in result.figures and "recall/can" in result.figures
    assert not any(name.endswith("/carton") for name in result.figures)
