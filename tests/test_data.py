import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from helpers.data import dataset as fridge_data
from helpers.data.formats.voc import parse_voc
from helpers.data.records import AnnotationError
from helpers.data.splits import FoldSpec, three_parts
from helpers.data.synthetic import SYNTHETIC_TAG, make_synthetic_voc
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES


def test_sample_counts_match_the_shared_readme(sample_records):
    # ../shared/data/README.md: 6 images, 12 boxes: carton 5, can 3, milk_bottle 2, water_bottle 2.
    assert len(sample_records) == 6
    assert fridge_data.class_counts(sample_records) == Counter(carton=5, can=3, milk_bottle=2, water_bottle=2)
    assert all((r.width, r.height) == (499, 666) for r in sample_records)


def _copy_sample(tmp_path: Path) -> Path:
    shutil.copytree(fridge_data.SAMPLE_DIR, tmp_path / "voc")
    return tmp_path / "voc"


def _edit(xml: Path, old: str, new: str):
    text = xml.read_text()
    assert old in text
    xml.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda v: (v / "images" / "10.jpg").unlink(), "image not found"),
        (lambda v: _edit(v / "annotations" / "10.xml", "<xmax>216</xmax>", "<xmax>600</xmax>"), "outside"),
        (lambda v: _edit(v / "annotations" / "10.xml", "<xmax>216</xmax>", "<xmax>50</xmax>"), "inverted"),
        (
            lambda v: _edit(v / "annotations" / "10.xml", "<name>carton</name>", "<name>pizza</name>"),
            "unknown class 'pizza'",
        ),
        (lambda v: _edit(v / "annotations" / "10.xml", "</annotation>", "</annot>"), "malformed XML"),
        (lambda v: _edit(v / "annotations" / "10.xml", "<xmin>86</xmin>", "<xmin>abc</xmin>"), "not a number"),
    ],
    ids=["missing-image", "box-outside", "box-inverted", "unknown-class", "malformed-xml", "not-a-number"],
)
def test_malformed_annotations_raise_clear_errors_naming_the_file(tmp_path, edit, message):
    voc = _copy_sample(tmp_path)
    edit(voc)
    with pytest.raises(AnnotationError, match=message) as info:
        parse_voc(voc / "annotations", voc / "images")
    assert "10.xml" in str(info.value)


def test_class_map_round_trips_and_reads_the_icevision_form():
    class_map = ClassMap(FRIDGE_CLASSES)
    assert ClassMap.from_json(class_map.to_json()) == class_map
    blog = {"background": 0, "carton": 1, "milk_bottle": 2, "water_bottle": 3, "can": 4}
    from_blog = ClassMap.from_json(json.dumps(blog))
    assert from_blog == class_map
    assert [from_blog.id(n) for n in blog if n != "background"] == [1, 2, 3, 4]
    assert from_blog.name(0) == "background" and from_blog.name(4) == "can"
    with pytest.raises(ValueError, match="background = 0"):
        ClassMap.from_obj({"carton": 0, "can": 1})
    with pytest.raises(KeyError, match="outside"):
        class_map.name(5)


@pytest.mark.parametrize(
    "obj",
    [
        ["background", "carton", "milk_bottle", "water_bottle", "can"],  # a plain list; background dropped
        ["carton", "milk_bottle", "water_bottle", "can"],
        {"classes": ["carton", "milk_bottle", "water_bottle", "can"]},  # our own form
    ],
)
def test_class_map_reads_a_list_and_our_json_form(obj):
    class_map = ClassMap.from_obj(obj)
    assert class_map.names == FRIDGE_CLASSES and class_map.num_classes == 5
    assert class_map == ClassMap(FRIDGE_CLASSES) and class_map != list(FRIDGE_CLASSES)
    assert repr(class_map) == "ClassMap(['carton', 'milk_bottle', 'water_bottle', 'can'])"


BAD_IDS = "class map ids must be 0..n with background = 0: "
NOT_A_MAP = "class map must be a list, {'classes': [...]} or {name: id}"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"background": 0, "carton": 2}, BAD_IDS + "{'background': 0, 'carton': 2}"),  # a gap in the ids
        ({"carton": 0, "can": 1}, BAD_IDS + "{'carton': 0, 'can': 1}"),  # no background at 0
        ({"carton": "1"}, NOT_A_MAP),  # ids that are not integers
        ({}, NOT_A_MAP),
        ("carton", NOT_A_MAP),
        (None, NOT_A_MAP),
        ({"classes": ["carton", "background"]}, "class names must not include 'background': it is id 0 implicitly"),
        ({"classes": ["carton", "can", "carton"]}, "duplicate class names: ('carton', 'can', 'carton')"),
        ({"classes": []}, "a class map needs at least one class"),
        (["background"], "a class map needs at least one class"),  # a plain list drops background
    ],
)
def test_a_class_map_of_another_shape_is_refused_with_its_reason(obj, message):
    with pytest.raises(ValueError) as info:
        ClassMap.from_obj(obj)
    assert str(info.value) == message


def test_an_unknown_class_name_names_the_known_ones():
    with pytest.raises(KeyError) as info:
        ClassMap(FRIDGE_CLASSES).id("milk")
    assert info.value.args == ("unknown class 'milk'; known: ['carton', 'milk_bottle', 'water_bottle', 'can']",)


def test_download_verifies_and_extracts_a_local_zip(tmp_path, fridge_zip):
    archive = fridge_zip(n_images=6)
    digest = fridge_data.sha256_file(archive)
    root = fridge_data.download(tmp_path / "cache", archive.as_uri(), sha256=digest, expected_images=6)
    assert (root / "images" / "6.jpg").is_file()
    assert len(parse_voc(root / "annotations", root / "images")) == 6
    # Cached: a second call works although the source is gone.
    archive.unlink()
    assert fridge_data.download(tmp_path / "cache", archive.as_uri(), sha256=digest, expected_images=6) == root


def test_download_rejects_wrong_checksum_and_wrong_count(tmp_path, fridge_zip):
    archive = fridge_zip(n_images=6)
    with pytest.raises(ValueError, match="sha256"):
        fridge_data.download(tmp_path / "a", archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "a" / archive.name).exists()
    with pytest.raises(ValueError, match="6 annotated images, expected 128"):
        fridge_data.download(tmp_path / "b", archive.as_uri())


def test_synthetic_set_is_labelled_valid_voc_with_boxes_inside(tmp_path):
    records = make_synthetic_voc(tmp_path, 12, seed=3)
    assert len(records) == 12
    assert all(r.image_path.name.startswith("synthetic_") for r in records)
    assert SYNTHETIC_TAG in (tmp_path / "annotations" / "synthetic_0000.xml").read_text()
    assert set(fridge_data.class_counts(records)) <= set(FRIDGE_CLASSES)
    for r in records:
        assert 1 <= len(r.boxes) <= 3
        for x1, y1, x2, y2 in r.boxes:
            assert 0 <= x1 < x2 <= r.width and 0 <= y1 < y2 <= r.height
    again = make_synthetic_voc(tmp_path / "again", 12, seed=3)
    assert [r.boxes for r in again] == [r.boxes for r in records]
    fewer = make_synthetic_voc(tmp_path, 5, seed=3)  # a re-run into the same folder
    assert [r.boxes for r in fewer] == [r.boxes for r in records[:5]]
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 5


def test_fridge_dataset_comes_from_the_url_variable_and_is_recorded(tmp_path, monkeypatch, fridge_zip):
    archive = fridge_zip()
    monkeypatch.setenv(fridge_data.URL_VARIABLE, archive.as_uri())
    source = fridge_data.resolve_dataset("fridge", tmp_path / "cache")
    assert (source.name, source.url, source.fallback_reason) == ("fridge", archive.as_uri(), None)
    assert len(source.records) == 128 and not source.uses_synthetic
    assert source.summary()["boxes"] == 256 and source.describe() == f"fridge ({archive.as_uri()})"


def test_unreachable_fridge_falls_back_to_the_sample_loudly_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(fridge_data.URL_VARIABLE, (tmp_path / "absent.zip").as_uri())
    source = fridge_data.resolve_dataset("fridge", tmp_path / "cache")
    assert source.name == "sample" and source.requested == "fridge" and len(source.records) == 6
    assert source.fallback_reason and "URLError" in source.fallback_reason
    assert source.describe().startswith("sample (fridge unavailable: URLError")
    banner = capsys.readouterr().err
    assert banner.count("could not be downloaded") == 1 and "Training on the bundled SAMPLE" in banner


def test_a_corrupt_download_is_an_error_not_a_silent_fallback(tmp_path, monkeypatch, fridge_zip):
    archive = fridge_zip(n_images=7)
    monkeypatch.setenv(fridge_data.URL_VARIABLE, archive.as_uri())
    with pytest.raises(ValueError, match="7 annotated images, expected 128"):
        fridge_data.resolve_dataset("fridge", tmp_path / "cache")


def test_a_voc_folder_is_a_dataset_and_anything_else_a_clear_error(tmp_path):
    source = fridge_data.resolve_dataset(str(_copy_sample(tmp_path)))
    assert len(source.records) == 6 and source.url is None and not source.uses_synthetic
    with pytest.raises(FileNotFoundError, match="not fridge or sample, nor a folder"):
        fridge_data.resolve_dataset(str(tmp_path / "nothing"))


def test_object_photos_are_single_object_images_with_the_hand_drawn_boxes():
    # ../shared/data/README.md: 134 photos, 113x150, can 32, carton 32, milk_bottle 37, water_bottle 33;
    # the object covers a median 18% of its photo (7-51%).
    photos = fridge_data.object_photos()
    assert len(photos) == 134 and all((r.width, r.height) == (113, 150) for r in photos)
    assert fridge_data.class_counts(photos) == Counter(can=32, carton=32, milk_bottle=37, water_bottle=33)
    covered = sorted((x2 - x1) * (y2 - y1) / (r.width * r.height) for r in photos for x1, y1, x2, y2 in r.boxes)
    assert 0.16 <= covered[len(covered) // 2] <= 0.20 and covered[0] >= 0.06 and covered[-1] <= 0.52


def test_a_photo_without_a_box_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(fridge_data.THUMBNAILS_DIR, folder)
    table = folder / fridge_data.PHOTO_BOXES
    table.write_text("".join(line for line in table.read_text().splitlines(True) if not line.startswith("can_7.jpg")))
    with pytest.raises(AnnotationError, match="no box for can_7.jpg"):
        fridge_data.object_photos(folder)


def test_validation_and_test_photos_never_appear_in_training_composites(tmp_path):
    from helpers.data.synthetic import source_photos

    parts = three_parts(fridge_data.object_photos(), FoldSpec(), lambda r: r.labels[0], lambda r: r.image_path.name)
    names = lambda records: {r.image_path.name for r in records}  # noqa: E731
    assert fridge_data.class_counts(parts.test) == Counter(can=7, carton=7, milk_bottle=8, water_bottle=7)
    make_synthetic_voc(tmp_path, 30, seed=1, photos=parts.train)
    assert source_photos(tmp_path) and source_photos(tmp_path) <= names(parts.train)
    assert not source_photos(tmp_path) & (names(parts.valid) | names(parts.test))


@pytest.mark.parametrize("margin", [None, 0.15], ids=["whole-photo", "object-with-margin"])
def test_composites_carry_the_objects_box_not_the_pasted_photos(tmp_path, margin):
    """The box follows the object through crop, flip and scale: its aspect ratio is the object's
    (a whole-photo box would have the photo's 113:150), and it covers the object's share of the crop."""
    photo = next(r for r in fridge_data.object_photos() if r.image_path.name == "carton_42.jpg")  # lying: wide
    (x1, y1, x2, y2) = photo.boxes[0]
    records = make_synthetic_voc(tmp_path, 6, seed=2, photos=[photo], objects_per_image=(1, 1), margin=margin)
    for r in records:
        (bx1, by1, bx2, by2) = r.boxes[0]
        assert (bx2 - bx1) / (by2 - by1) == pytest.approx((x2 - x1) / (y2 - y1), rel=0.05)
