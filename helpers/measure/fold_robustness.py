"""Robustness over folds, for `python -m helpers accuracy`: each fold's test images perturbed
(helpers.evaluate.robustness's seven perturbations) through the served FP32 model at the fold's served
threshold, and the mean recall drop over folds judged against MAX_RECALL_DROP. One fold's ~30 boxes
move recall by about 3 points a box; the mean over five folds is the figure a recipe is judged by."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Protocol

from helpers.evaluate.robustness import MAX_RECALL_DROP, robustness, served
from helpers.measure.targets import MET, NOT_MET, Goal

CLEAN = "clean"


class FoldRow(Protocol):
    robustness: dict[str, list[int]]  # perturbation -> [boxes, found, false]


def measure(detector, threshold: float, records, class_map) -> dict[str, list[int]]:
    """perturbation -> [boxes, found, false] on `records` at `threshold` (a row's `robustness`)."""
    table = robustness(served(detector, threshold), records, class_map, threshold)
    return {r.perturbation: [r.boxes, r.found, r.false] for r in table.rows}


def recall(counts: list[int]) -> float:
    boxes, found, _ = counts
    return found / boxes if boxes else 1.0


def mean_drops(group: Sequence[FoldRow]) -> dict[str, tuple[float, float]]:
    """perturbation -> (mean, worst) over the folds of clean recall minus perturbed recall."""
    names = [n for n in group[0].robustness if n != CLEAN]
    drops = {n: [recall(r.robustness[CLEAN]) - recall(r.robustness[n]) for r in group] for n in names}
    return {n: (statistics.fmean(d), max(d)) for n, d in drops.items()}


def goal(group: Sequence[FoldRow]) -> Goal:
    """Mean recall drop over folds <= MAX_RECALL_DROP under every perturbation."""
    drops = mean_drops(group)
    worst = max(drops, key=lambda n: drops[n][0])
    over = [n for n, (mean, _) in drops.items() if mean > MAX_RECALL_DROP + 1e-9]
    figure = f"worst mean drop {drops[worst][0]:.3f} ({worst}); {len(over)} of {len(drops)} over"
    return f"mean recall drop <= {MAX_RECALL_DROP} under every perturbation", figure, NOT_MET if over else MET


def section(groups: dict[str, Sequence[FoldRow]]) -> list[str]:
    """The Markdown table: per perturbation, each group's mean recall over folds and its mean / worst drop."""
    names = list(next(iter(groups.values()))[0].robustness)
    lines = [
        "Robustness (`helpers.evaluate.robustness`: each fold's test images perturbed, served FP32 model at the",
        "fold's served threshold; recall, mean over folds, and in brackets its drop from clean: mean / worst fold):",
        "",
        "| perturbation | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    drops = {label: mean_drops(group) for label, group in groups.items()}
    for name in names:
        cells = []
        for label, group in groups.items():
            mean_recall = statistics.fmean(recall(r.robustness[name]) for r in group)
            if name == CLEAN:
                cells.append(f"{mean_recall:.3f}")
            else:
                drop, worst = drops[label][name]
                cells.append(f"{mean_recall:.3f} (drop {drop:.3f} / {worst:.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]
