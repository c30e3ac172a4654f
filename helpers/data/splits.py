"""Train / validation / test parts by photo: seeded, stratified by class, and rotating over k folds.

The test part is used by nothing but the report; validation chooses the checkpoint, the served threshold
and every recipe choice. Fold f of k takes every k-th item of each class's seeded order (offset f) as
test, so the k folds' test parts are disjoint and together cover every item once; validation is then the
first `valid_fraction` of what is left, per class, in the same order.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclasses.dataclass(frozen=True)
class Parts(Generic[Item]):
    train: list[Item]
    valid: list[Item]
    test: list[Item]


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """Which fold of how many, and how large validation is (a fraction of what test leaves)."""

    fold: int = 0
    folds: int = 5
    valid_fraction: float = 0.15
    seed: int = 42

    def __post_init__(self):
        if self.folds < 2 or not 0 <= self.fold < self.folds:
            raise ValueError(f"fold {self.fold} of {self.folds}: need 0 <= fold < folds and folds >= 2")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError(f"valid_fraction {self.valid_fraction}: need 0 <= fraction < 1")


def three_parts(
    items: Sequence[Item], spec: FoldSpec, stratum: Callable[[Item], Hashable], name: Callable[[Item], str]
) -> Parts[Item]:
    """Split items into train / valid / test for spec's fold, each stratum (class) on its own.

    Items are ordered by name before shuffling, so the parts depend on the items and the seed only, not
    on the order they were listed in. Every part is sorted by name."""
    train, valid, test = [], [], []
    strata: dict[Hashable, list[Item]] = {}
    for item in sorted(items, key=name):
        strata.setdefault(stratum(item), []).append(item)
    for key in sorted(strata, key=str):
        order = strata[key]
        random.Random(f"{spec.seed}-{key}").shuffle(order)
        rest = [item for i, item in enumerate(order) if i % spec.folds != spec.fold]
        test += [item for i, item in enumerate(order) if i % spec.folds == spec.fold]
        n_valid = round(len(rest) * spec.valid_fraction)
        valid += rest[:n_valid]
        train += rest[n_valid:]
    _fill_empty(train, valid, test, spec.seed, name)
    return Parts(*(sorted(part, key=name) for part in (train, valid, test)))


def _fill_empty(train: list, valid: list, test: list, seed: int, name: Callable) -> None:
    """A small dataset's strata may leave test or validation empty: each empty part takes one training
    item (seeded), while at least one item is left to train on."""
    rng = random.Random(f"{seed}-fill")
    for part in (test, valid):
        if not part and len(train) > 1:
            train.sort(key=name)
            part.append(train.pop(rng.randrange(len(train))))


def small_set_parts(
    items: Sequence[Item], spec: FoldSpec, name: Callable[[Item], str], n_valid: int = 1
) -> Parts[Item]:
    """A handful of multi-object images (the 6 fridge photos): fold f tests the items at positions
    f, f + k, ... of the seeded order, validation takes the next n_valid of the rest, train keeps the others
    (at least one). With 6 photos and 5 folds, fold 0 tests 2 photos, every other fold 1."""
    order = sorted(items, key=name)
    random.Random(spec.seed).shuffle(order)
    test = [item for i, item in enumerate(order) if i % spec.folds == spec.fold]
    rest = [item for i, item in enumerate(order) if i % spec.folds != spec.fold]
    n_valid = min(n_valid, max(0, len(rest) - 1))
    return Parts(*(sorted(part, key=name) for part in (rest[n_valid:], rest[:n_valid], test)))


def rarest_class(items: Sequence, labels: Callable = lambda record: record.labels) -> Callable[[object], Hashable]:
    """A stratum for multi-object images: each image's rarest class over `items`, so that rare classes
    reach every part."""
    counts: dict[Hashable, int] = {}
    for item in items:
        for label in labels(item):
            counts[label] = counts.get(label, 0) + 1
    return lambda item: min(labels(item), key=lambda label: (counts[label], str(label)), default="")
