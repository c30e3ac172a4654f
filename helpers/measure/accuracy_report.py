"""The accuracy table's rows and what is said of them: the figures of one (mode, model, seed, fold)
run (AccuracyRow), the targets they are judged by, BENCHMARKS.md's "training" section, README's
headline, and the committed table read back (what notebook 01 places its run in).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from pathlib import Path

from helpers.measure import fold_robustness
from helpers.measure.benchmark.results import Int8Accuracy
from helpers.measure.targets import (
    FULL_MAX_CPU_MINUTES,
    FULL_MIN_MAP,
    FULL_MIN_MAP_50,
    MET,
    NOT_MET,
    QUICK_MAX_SECONDS,
    QUICK_MIN_MAP_50,
    QUICK_MIN_PRECISION,
    QUICK_MIN_RECALL,
    Goal,
    int8_accuracy_goal,
)
from helpers.paths import PROJECT_ROOT
from helpers.pipeline.steps import SERVED_CALIBRATION_IMAGES
from helpers.train.config import TrainConfig
from helpers.train.models import LITE0_MODEL


@dataclasses.dataclass(frozen=True)
class TestFigures:
    """A run's result on its test images at its served threshold (chosen on validation): COCO mAP,
    recall, precision, the boxes found and the false detections, and each figure's 95% interval."""

    images: int
    boxes: int
    map: float
    map_50: float
    threshold: float
    recall: float
    precision: float
    found: int
    false: int
    intervals: dict[str, list[float]]

    def shown(self, name: str, digits: int = 3) -> str:
        low, high = self.intervals[name]
        bounds = max(2, digits - 1)
        return f"{getattr(self, name):.{digits}f} [{low:.{bounds}f}, {high:.{bounds}f}]"


@dataclasses.dataclass(frozen=True)
class AccuracyRow:
    """One (mode, model, seed, fold) run: its training, its test figures, the fridge test photos'
    boxes found (by image, "found/total"), its validation mAP@.5 (the selection record), and the served
    models' test mAP (fp32, int8_all, int8_served -> map, map_50). A row of results.json."""

    mode: str
    model: str
    seed: int
    fold: int
    config_hash: str
    weights: str
    dataset: str
    train_seconds: float
    cpu_seconds: float
    epochs: int
    best_epoch: int
    n_train: int
    test: TestFigures
    fridge_test_found: dict[str, str]
    validation_map_50: float
    served: dict[str, dict[str, float]]
    robustness: dict[str, list[int]]  # perturbation -> [boxes, found, false], served FP32 (fold_robustness)

    @classmethod
    def from_json(cls, record: dict) -> AccuracyRow:
        return cls(**{**record, "test": TestFigures(**record["test"])})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def run_goals(row: AccuracyRow) -> list[Goal]:
    """One run against its mode's per-run targets on its test images; INT8 as served."""
    t = row.test
    goals: list[Goal] = []
    if row.mode == "quick":
        goals += [
            (
                f"training <= {QUICK_MAX_SECONDS} s",
                f"{row.train_seconds:.0f} s",
                MET if row.train_seconds <= QUICK_MAX_SECONDS else NOT_MET,
            ),
            (
                f"recall >= {QUICK_MIN_RECALL} and precision >= {QUICK_MIN_PRECISION}",
                f"{t.shown('recall', 2)} / {t.shown('precision', 2)}",
                MET if t.recall >= QUICK_MIN_RECALL and t.precision >= QUICK_MIN_PRECISION else NOT_MET,
            ),
        ]
    else:
        minutes = row.cpu_seconds / 60
        goals.append(
            (
                f"training <= {FULL_MAX_CPU_MINUTES} CPU-min",
                f"{minutes:.1f}",
                MET if minutes <= FULL_MAX_CPU_MINUTES else NOT_MET,
            )
        )
    int8 = Int8Accuracy({"test": t.images}, row.served["fp32"], row.served["int8_served"])
    goals.append(int8_accuracy_goal(row.model, int8))
    return goals


def fold_goals(mode: str, group: list[AccuracyRow]) -> list[Goal]:
    """The mean over folds against the mode's mAP targets (one fold is one draw of test images)."""
    map_50 = statistics.fmean(r.test.map_50 for r in group)
    map_ = statistics.fmean(r.test.map for r in group)
    if mode == "quick":
        return [
            (f"mean test mAP@.5 >= {QUICK_MIN_MAP_50}", f"{map_50:.3f}", MET if map_50 >= QUICK_MIN_MAP_50 else NOT_MET)
        ]
    met = map_50 >= FULL_MIN_MAP_50 and map_ >= FULL_MIN_MAP
    return [
        (
            f"mean test mAP@.5 >= {FULL_MIN_MAP_50} and mAP >= {FULL_MIN_MAP}",
            f"{map_50:.3f} / {map_:.3f}",
            MET if met else NOT_MET,
        )
    ]


def by_recipe(rows: list[AccuracyRow]) -> dict[tuple[str, str, int], list[AccuracyRow]]:
    """The rows grouped by (mode, model, seed): one group is one recipe over its folds."""
    groups: dict[tuple[str, str, int], list[AccuracyRow]] = {}
    for r in rows:
        groups.setdefault((r.mode, r.model, r.seed), []).append(r)
    return groups


def mean_spread(values: list[float], digits: int = 3) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def spread(rows: list[AccuracyRow]) -> list[str]:
    """Mean ± standard deviation (min-max) over the folds of each (mode, model, seed)."""
    lines = []
    for (mode, model, seed), group in by_recipe(rows).items():
        lines.append(
            f"- {mode} {model}, seed {seed}, folds {', '.join(str(r.fold) for r in group)}: "
            f"test mAP {mean_spread([r.test.map for r in group])}, "
            f"mAP@.5 {mean_spread([r.test.map_50 for r in group])}, "
            f"recall {mean_spread([r.test.recall for r in group], 2)}, "
            f"precision {mean_spread([r.test.precision for r in group], 2)}, "
            f"train {mean_spread([r.train_seconds for r in group], 0)} s"
        )
    return lines


def runs_measured(rows: list[AccuracyRow]) -> str:
    """What the table holds, as "quick MODEL seed 42, folds 0-4; ..."."""
    return "; ".join(
        f"{mode} {model} seed {seed}, fold{'s' if len(group) > 1 else ''} {', '.join(str(r.fold) for r in group)}"
        for (mode, model, seed), group in by_recipe(rows).items()
    )


def markdown(rows: list[AccuracyRow]) -> str:
    lines = [
        "## Training: what the models learn (`python -m helpers accuracy`)",
        "",
        f"Written by `python -m helpers accuracy` ({runs_measured(rows)}; 2 CPUs, 2 threads; *CPU min* is the",
        "process's CPU time over all its threads). Every figure is on the run's *test* images (split.json:",
        "a fifth of each class of object photos plus one or two fridge photos, rotating over 5 folds), which",
        "chose nothing: the checkpoint and the served threshold (best F1) were chosen on the validation images.",
        "Brackets: 95% bootstrap intervals over the test images. *served*: recall / precision at the served",
        "threshold, with the boxes found and the false detections. INT8 is the project's recipe through the",
        f"Lambda's Detector, calibrated on every training image, and in brackets on {SERVED_CALIBRATION_IMAGES}",
        "of them spread over the list (what `make run` serves). *valid mAP@.5* is the selection record.",
        "",
        "| mode | model | seed | fold | train s (CPU min) | test mAP | test mAP@.5 | served thr: R / P (found, false) "
        "| fridge test | test mAP@.5 FP32 / INT8 | valid mAP@.5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, s = r.test, r.served
        fridge = ", ".join(f"{name} {found}" for name, found in r.fridge_test_found.items())
        lines.append(
            f"| {r.mode} | {r.model} | {r.seed} | {r.fold} "
            f"| {r.train_seconds:.0f} ({r.cpu_seconds / 60:.1f}) "
            f"| {t.shown('map')} | {t.shown('map_50')} ({t.images} images, {t.boxes} boxes) "
            f"| {t.threshold:.2f}: {t.shown('recall', 2)} / {t.shown('precision', 2)} ({t.found}, {t.false}) "
            f"| {fridge} "
            f"| {s['fp32']['map_50']:.3f} / {s['int8_all']['map_50']:.3f} ({s['int8_served']['map_50']:.3f}) "
            f"| {r.validation_map_50:.3f} |"
        )
    lines += ["", "Mean ± standard deviation (min-max) over folds:", "", *spread(rows), ""]
    groups = {f"{mode} {model} seed {seed}": group for (mode, model, seed), group in by_recipe(rows).items()}
    lines += fold_robustness.section(groups)
    lines += ["Training targets:", "", "| run | goal | measured | met |", "|---|---|---|---|"]
    for (mode, model, seed), group in by_recipe(rows).items():
        for goal, figure, status in [*fold_goals(mode, group), fold_robustness.goal(group)]:
            lines.append(f"| {mode} {model} seed {seed}, {len(group)} folds | {goal} | {figure} | {status} |")
        for r in group:
            for goal, figure, status in run_goals(r):
                lines.append(f"| {r.mode} {r.model} seed {r.seed} fold {r.fold} | {goal} | {figure} | {status} |")
    return "\n".join(lines)


README_SECTION = "accuracy:headline"


def headline(rows: list[AccuracyRow]) -> str:
    """README's accuracy lines: per (mode, model, seed) the mean over folds, and the default fold's
    figures with their intervals (the committed quick model is seed 42, fold 0)."""
    lines = ["| run | test mAP@.5, mean ± sd over folds | default fold: mAP@.5, recall / precision at its threshold |"]
    lines.append("|---|---|---|")
    for (mode, model, seed), group in by_recipe(rows).items():
        first = min(group, key=lambda r: r.fold)
        t = first.test
        lines.append(
            f"| {mode} {model}, seed {seed} | {mean_spread([r.test.map_50 for r in group])} over {len(group)} fold(s) "
            f"| fold {first.fold}: {t.shown('map_50')}, {t.shown('recall', 2)} / {t.shown('precision', 2)} "
            f"at {t.threshold:.2f} ({t.images} test images) |"
        )
    return "\n".join(lines)


#: A row of markdown()'s table: mode, model, seed, fold, ..., then the test mAP@.5 cell "0.894 [".
#: The section of BENCHMARKS.md that markdown() fills (helpers.measure.markdown).
SECTION = "training"
_ROW = re.compile(r"^\| (quick|full) \| (\S+) \| (\d+) \| (\d+) \| [^|]+\| [^|]+\| (\d\.\d+) \[")


def committed_test_map_50(
    mode: str, model: str = LITE0_MODEL, path: Path = PROJECT_ROOT / "BENCHMARKS.md"
) -> dict[int, float]:
    """fold -> test mAP@.5 of the default seed's runs of (`mode`, `model`), as the committed table in
    BENCHMARKS.md's "training" section states them."""
    text = path.read_text()
    section = text[text.find(f"<!-- {SECTION}:start -->") : text.find(f"<!-- {SECTION}:end -->")]
    found = (_ROW.match(line) for line in section.splitlines())
    return {int(m[4]): float(m[5]) for m in found if m and (m[1], m[2], int(m[3])) == (mode, model, TrainConfig.seed)}
