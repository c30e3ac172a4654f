"""The train / validation / test parts on the bundled photos: disjoint, stratified, rotating over folds."""

import random
from collections import Counter

import pytest

from helpers.data import dataset as fridge_data
from helpers.data.splits import FoldSpec, small_set_parts, three_parts


def name(record):
    return record.image_path.name


def label(record):
    return record.labels[0]


@pytest.fixture(scope="module")
def photos():
    return fridge_data.object_photos()


@pytest.mark.parametrize("fold", range(5))
def test_parts_are_disjoint_cover_everything_and_keep_every_class(photos, fold):
    parts = three_parts(photos, FoldSpec(fold=fold), label, name)
    names = [set(map(name, part)) for part in (parts.train, parts.valid, parts.test)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set.union(*names) == set(map(name, photos))
    for part in (parts.train, parts.valid, parts.test):
        assert set(Counter(map(label, part))) == set(fridge_data.FRIDGE_CLASSES)
    by_class = Counter(map(label, photos))
    for cls, n in Counter(map(label, parts.test)).items():
        assert n in (by_class[cls] // 5, -(-by_class[cls] // 5))  # a fifth of each class, rounded either way


def test_the_folds_test_parts_partition_the_photos(photos):
    tests = [set(map(name, three_parts(photos, FoldSpec(fold=f), label, name).test)) for f in range(5)]
    assert sum(map(len, tests)) == len(photos) and set.union(*tests) == set(map(name, photos))


def test_parts_depend_on_the_items_and_seed_not_their_order(photos):
    shuffled = list(photos)
    random.Random(7).shuffle(shuffled)
    assert three_parts(shuffled, FoldSpec(), label, name) == three_parts(photos, FoldSpec(), label, name)
    assert three_parts(photos, FoldSpec(seed=1), label, name) != three_parts(photos, FoldSpec(), label, name)


def test_the_fridge_photos_rotate_through_test():
    sample = fridge_data.load_sample()
    tested = [small_set_parts(sample, FoldSpec(fold=f), name) for f in range(5)]
    assert sorted(name(r) for parts in tested for r in parts.test) == sorted(map(name, sample))
    for parts in tested:
        assert len(parts.valid) == 1 and len(parts.train) >= 3
        assert not {name(r) for r in parts.train} & {name(r) for r in parts.valid + parts.test}


@pytest.mark.parametrize("spec", [dict(fold=5), dict(folds=1, fold=0), dict(valid_fraction=1.0)])
def test_impossible_specs_are_refused(spec):
    with pytest.raises(ValueError):
        FoldSpec(**spec)


@pytest.mark.parametrize("n", [3, 5, 6])
def test_a_small_dataset_still_gets_one_validation_and_one_test_image(n):
    records = fridge_data.load_sample()[:n]
    for fold in range(5):
        parts = three_parts(records, FoldSpec(fold=fold), label, name)
        assert parts.valid and parts.test and parts.train
        assert sorted(map(name, parts.train + parts.valid + parts.test)) == sorted(map(name, records))
