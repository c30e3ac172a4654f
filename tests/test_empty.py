"""Empty images cut from the 6 bundled fridge photos: enough of them, none touching a box, the same
every time, large enough, written as records with no boxes."""

import numpy as np
import pytest
from PIL import Image

from helpers.data import empty
from helpers.data.dataset import load_sample, object_photos
from helpers.data.records import Record


@pytest.fixture(scope="module")
def crops():
    return empty.empty_crops(load_sample())


def test_at_least_20_crops_from_the_fridge_photos(crops):
    assert len(crops) >= 20
    assert {c.source.image_path.name for c in crops} == {r.image_path.name for r in load_sample()}


def test_no_crop_touches_a_box_of_its_photo(crops):
    for crop in crops:
        x0, y0, x1, y1 = crop.box
        for bx0, by0, bx1, by1 in crop.source.boxes:
            overlap_w = min(x1, bx1 + empty.MARGIN) - max(x0, bx0 - empty.MARGIN)
            overlap_h = min(y1, by1 + empty.MARGIN) - max(y0, by0 - empty.MARGIN)
            assert overlap_w <= 0 or overlap_h <= 0, (crop.name, (bx0, by0, bx1, by1))


def test_crops_of_one_photo_share_no_pixel(crops):
    for crop in crops:
        for other in crops:
            if other is crop or other.source.image_path != crop.source.image_path:
                continue
            inter_w = min(crop.box[2], other.box[2]) - max(crop.box[0], other.box[0])
            inter_h = min(crop.box[3], other.box[3]) - max(crop.box[1], other.box[1])
            assert inter_w <= 0 or inter_h <= 0, (crop.name, other.name)


def test_sizes_and_shapes(crops):
    for crop in crops:
        x0, y0, x1, y1 = crop.box
        w, h = x1 - x0, y1 - y0
        assert min(w, h) >= empty.MIN_SIDE
        assert max(w, h) <= empty.MAX_ASPECT * min(w, h)
        assert 0 <= x0 and 0 <= y0 and x1 <= crop.source.width and y1 <= crop.source.height


def test_deterministic(crops):
    again = empty.empty_crops(load_sample())
    assert [(c.source.image_path, c.box) for c in again] == [(c.source.image_path, c.box) for c in crops]


def test_written_records_have_no_boxes_and_the_photos_pixels(crops, tmp_path):
    records = empty.write_crops(crops, tmp_path / "empty")
    assert len(records) == len(crops) and all(isinstance(r, Record) for r in records)
    assert len({r.image_path.name for r in records}) == len(records)
    for record, crop in zip(records, crops):
        assert record.boxes == [] and record.labels == []
        with Image.open(record.image_path) as written, Image.open(crop.source.image_path) as source:
            assert (
                (record.width, record.height) == written.size == (crop.box[2] - crop.box[0], crop.box[3] - crop.box[1])
            )
            assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(source.convert("RGB").crop(crop.box)))
    again = empty.empty_records(tmp_path / "again")
    assert [r.image_path.read_bytes() for r in again] == [r.image_path.read_bytes() for r in records]


def test_the_object_photos_give_none():
    """The object fills the middle of each 113 x 150 photo: no 96 px region stays clear of it."""
    assert empty.empty_crops(object_photos()) == []


def test_a_photo_without_boxes_is_all_free():
    windows = empty.free_windows(200, 100, [])
    assert [tuple(w) for w in empty.largest_disjoint(windows)] == [(0, 0, 192, 96)]
