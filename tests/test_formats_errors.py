"""More of what the format readers (helpers.data.formats) do with odd or bad data, as users export it:
each bad input is one AnnotationError line naming the file, or is left out with --skip-bad; each odd
but valid one reads to the right records. The data is the bundled real sample, converted."""

import json
import shutil
from pathlib import Path

import pytest

from helpers.data import dataset as fridge_data
from helpers.data.convert import convert
from helpers.data.formats import load
from helpers.runtime.config import FRIDGE_CLASSES

SAMPLE_NAMES = ["10.jpg", "11.jpg", "12.jpg", "13.jpg", "14.jpg", "15.jpg"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exports")
    for to in ("voc", "coco", "yolo"):
        convert(fridge_data.SAMPLE_DIR, to, out / to)
    return {to: out / to for to in ("voc", "coco", "yolo")}


def _coco(root: Path) -> Path:
    return root / "annotations" / "instances_default.json"


def _edit_coco(change):
    def damage(root: Path) -> None:
        data = json.loads(_coco(root).read_text())
        change(data)
        _coco(root).write_text(json.dumps(data))

    return damage


def _replace(relative: str, old: str, new: str):
    def damage(root: Path) -> None:
        path = root / relative
        text = path.read_text()
        assert old in text, (path, old)
        path.write_text(text.replace(old, new, 1))

    return damage


def _rename(relative: str, tag: str, new: str):
    """The first <tag>...</tag> in the file becomes <new>...</new>: the element is gone, the XML well formed."""

    def damage(root: Path) -> None:
        _replace(relative, f"<{tag}>", f"<{new}>")(root)
        _replace(relative, f"</{tag}>", f"</{new}>")(root)

    return damage


def _write(relative: str, text: str):
    return lambda root: (root / relative).write_text(text)


def _del(entry: dict, key: str) -> None:
    del entry[key]


def _non_instances_json(root: Path) -> None:
    """A tool's notes beside the images: the only JSON in the folder, so it is read as COCO."""
    shutil.rmtree(root / "annotations")
    (root / "export.json").write_text(json.dumps({"info": {"tool": "labeller"}, "images": 6}))


def _split_categories(root: Path) -> None:
    data = json.loads(_coco(root).read_text())
    _coco(root).unlink()
    (root / "annotations" / "instances_a.json").write_text(json.dumps(data))
    data["categories"][0]["name"] = "yoghurt"
    (root / "annotations" / "instances_b.json").write_text(json.dumps({**data, "images": [], "annotations": []}))


BAD = {
    "coco-unknown-image-id": ("coco", _edit_coco(lambda c: c["annotations"][0].update(image_id=999)), "instances_default.json: annotation {id} is of image_id 999, which is not in 'images'"),
    "coco-bbox-three-numbers": ("coco", _edit_coco(lambda c: c["annotations"][0].update(bbox=[1, 2, 3])), "instances_default.json: 10.jpg: annotation {id}: bbox [1, 2, 3] is not [x, y, w, h]"),
    "coco-bbox-a-string": ("coco", _edit_coco(lambda c: c["annotations"][0].update(bbox="1,2,3,4")), "instances_default.json: 10.jpg: annotation {id}: bbox '1,2,3,4' is not [x, y, w, h]"),
    "coco-bbox-a-string-number": ("coco", _edit_coco(lambda c: c["annotations"][0].update(bbox=[1, "2", 3, 4])), "bbox [1, '2', 3, 4] is not [x, y, w, h]"),
    "coco-bbox-missing": ("coco", _edit_coco(lambda c: _del(c["annotations"][0], "bbox")), "instances_default.json: 10.jpg: annotation {id}: bbox None is not [x, y, w, h]"),
    "coco-duplicate-category-id": ("coco", _edit_coco(lambda c: c["categories"][1].update(id=c["categories"][0]["id"])), "instances_default.json: duplicate category ids"),
    "coco-category-without-id": ("coco", _edit_coco(lambda c: _del(c["categories"][0], "id")), "instances_default.json: every category needs an integer 'id' and a 'name'"),
    "coco-missing-file-name": ("coco", _edit_coco(lambda c: _del(c["images"][0], "file_name")), "instances_default.json: image {'id': "),
    "coco-entries-not-objects": ("coco", _edit_coco(lambda c: c["images"].append("11.jpg")), "instances_default.json: 'images', 'annotations' and 'categories' must be lists of objects"),
    "coco-categories-disagree": ("coco", _split_categories, "instances_b.json: categories differ from instances_a.json's"),
    "coco-non-instances-json": ("coco", _non_instances_json, "export.json: not a COCO instances file (needs 'images' and 'categories' lists)"),
    "yolo-non-numeric": ("yolo", _replace("labels/10.txt", "0 0.30260521", "0 left"), "labels/10.txt:1: not a class id and four numbers: '0 left"),
    "yolo-class-id-not-integer": ("yolo", _replace("labels/10.txt", "0 0.30260521", "0.0 0.30260521"), "labels/10.txt:1: not a class id and four numbers"),
    "yolo-negative-class-id": ("yolo", _replace("labels/10.txt", "0 0.30260521", "-1 0.30260521"), "labels/10.txt:1: class id -1 has no name (4 in data.yaml)"),
    "yolo-data-yaml-not-yaml": ("yolo", _write("data.yaml", "names: [carton, milk_bottle\n"), "data.yaml: not a YAML mapping (ParserError)"),
    "yolo-data-yaml-a-list": ("yolo", _write("data.yaml", "- carton\n- can\n"), "data.yaml: not a YAML mapping (AttributeError)"),
    "yolo-names-a-string": ("yolo", _write("data.yaml", "names: carton can\n"), "data.yaml: 'names' must be a list or {0: name, 1: name, ...}"),
    "yolo-names-ids-from-1": ("yolo", _write("data.yaml", "names: {1: carton, 2: milk_bottle, 3: water_bottle, 4: can}\n"), "data.yaml: 'names' must be a list or {0: name, 1: name, ...}"),
    "yolo-names-duplicate": ("yolo", _write("data.yaml", "names: [carton, carton, water_bottle, can]\n"), "data.yaml: duplicate class names"),
    "voc-without-size": ("voc", _rename("annotations/10.xml", "size", "sizes"), "annotations/10.xml: missing <size>"),
    "voc-without-bndbox": ("voc", _rename("annotations/10.xml", "bndbox", "box"), "annotations/10.xml: object 'carton' has no <bndbox>"),
    "voc-size-disagrees": ("voc", _replace("annotations/10.xml", "<width>499</width>", "<width>500</width>"), "annotations/10.xml: annotated as 500x666 but 10.jpg is 499x666"),
}  # fmt: skip


@pytest.mark.parametrize(("form", "damage", "message"), BAD.values(), ids=BAD.keys())
def test_bad_data_is_one_line_naming_the_file(exports, tmp_path, form, damage, message):
    root = Path(shutil.copytree(exports[form], tmp_path / form))
    if form == "coco":  # the first annotation's id, which the messages name
        message = message.replace("{id}", str(json.loads(_coco(root).read_text())["annotations"][0]["id"]))
    damage(root)
    with pytest.raises(fridge_data.AnnotationError) as info:
        load(root)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(root)) and message in text, text


@pytest.mark.parametrize(
    ("form", "damage", "skipped"),
    [
        ("coco", _edit_coco(lambda c: c["annotations"][0].update(bbox=[1, 2, 3])), "bbox [1, 2, 3] is not"),
        ("coco", _edit_coco(lambda c: _del(c["images"][0], "file_name")), "has no 'file_name'"),
        ("voc", _rename("annotations/10.xml", "bndbox", "box"), "has no <bndbox>"),
        ("voc", _replace("annotations/10.xml", "<width>499</width>", "<width>500</width>"), "annotated as 500x666"),
    ],
)
def test_skip_bad_leaves_the_bad_image_out_for_coco_and_voc(exports, tmp_path, form, damage, skipped):
    root = Path(shutil.copytree(exports[form], tmp_path / form))
    damage(root)
    with pytest.raises(fridge_data.AnnotationError, match=skipped.replace("[", r"\[")):
        load(root)
    data = load(root, skip_bad=True)
    assert sorted(r.image_path.name for r in data.records) == SAMPLE_NAMES[1:]
    ((line,),) = [data.skipped]
    assert skipped in line and line.startswith(str(root))
    assert data.notes()[-1] == f"{root}: --skip-bad skipped 1 bad image(s) or label(s)"


def _boxes(root: Path) -> dict:
    return {
        r.image_path.name: (r.width, r.height, [tuple(map(round, b)) for b in r.boxes], r.labels)
        for r in load(root).records
    }


def test_coco_without_width_and_height_takes_them_from_the_image(exports, tmp_path):
    root = Path(shutil.copytree(exports["coco"], tmp_path / "coco"))
    expected = _boxes(root)
    _edit_coco(lambda c: [(_del(image, "width"), _del(image, "height")) for image in c["images"]])(root)
    assert _boxes(root) == expected and expected["10.jpg"][:2] == (499, 666)


def test_several_coco_instances_files_are_one_dataset(exports, tmp_path):
    root = Path(shutil.copytree(exports["coco"], tmp_path / "coco"))
    expected = _boxes(root)
    data = json.loads(_coco(root).read_text())
    _coco(root).unlink()
    for split, images in (("train", data["images"][:4]), ("val", data["images"][4:])):
        ids = {image["id"] for image in images}
        part = {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(part))
    shutil.copytree(root / "images", root / "val")  # the val file's images may sit in a folder named after it
    assert _boxes(root) == expected and len(expected) == 6


def test_yolo_names_as_id_to_name_and_an_empty_label_file(exports, tmp_path):
    root = Path(shutil.copytree(exports["yolo"], tmp_path / "yolo"))
    expected = _boxes(root)
    (root / "data.yaml").write_text("names: {0: carton, 1: milk_bottle, 2: water_bottle, 3: can}\n")
    assert load(root).classes == FRIDGE_CLASSES and _boxes(root) == expected
    (root / "labels" / "10.txt").write_text("")  # a background image: kept, without boxes
    assert _boxes(root) == {**expected, "10.jpg": (499, 666, [], [])}
