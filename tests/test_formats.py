"""Datasets in VOC, COCO and YOLO form (helpers.data.formats) read to the same records, convert into
each other, and refuse bad data in one line naming the file. The data is the bundled real sample,
converted by helpers.data.convert."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers.data import dataset as fridge_data
from helpers.data.convert import convert
from helpers.data.formats import load
from helpers.data.formats.common import relative_image
from helpers.data.records import AnnotationError
from helpers.runtime.config import FRIDGE_CLASSES
from helpers.runtime.model import Detector
from helpers.train.summary import RunSummary

SAMPLE = fridge_data.SAMPLE_DIR


def _as_training_records(root: Path, tolerance: float = 1e-4) -> list[tuple]:
    """What training sees of each record, the image by its path inside the dataset, boxes rounded."""
    return [
        (
            relative_image(root, r.image_path).as_posix(),
            r.width,
            r.height,
            [tuple(round(v / tolerance) * tolerance for v in box) for box in r.boxes],
            r.labels,
        )
        for r in load(root).records
    ]


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """The sample in each format, written by `convert` straight from the bundled VOC."""
    out = tmp_path_factory.mktemp("exports")
    for to in ("voc", "coco", "yolo"):
        convert(SAMPLE, to, out / to)
    return {to: out / to for to in ("voc", "coco", "yolo")}


def _copy(exports: dict[str, Path], form: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exports[form], tmp_path / form))


def test_the_three_formats_of_the_sample_give_identical_training_records(exports):
    expected = _as_training_records(SAMPLE)
    assert len(expected) == 6 and sum(len(r[3]) for r in expected) == 12
    for form, root in exports.items():
        data = load(root)
        assert (data.format, data.classes) == (form, FRIDGE_CLASSES), form
        assert _as_training_records(root) == expected, form
        assert [r.image_path.read_bytes() for r in data.records] == [
            r.image_path.read_bytes() for r in load(SAMPLE).records
        ]


def test_voc_to_coco_to_yolo_to_voc_gives_the_same_records_within_a_pixel(tmp_path):
    src = SAMPLE
    for to in ("coco", "yolo", "voc"):
        convert(src, to, tmp_path / to)
        src = tmp_path / to
    before, after = load(SAMPLE), load(src)
    assert (after.format, after.classes) == ("voc", before.classes)
    for a, b in zip(before.records, after.records, strict=True):
        assert (a.image_path.name, a.width, a.height, a.labels) == (b.image_path.name, b.width, b.height, b.labels)
        assert [v for box in b.boxes for v in box] == pytest.approx([v for box in a.boxes for v in box], abs=1.0)


def test_each_format_is_a_training_dataset_with_its_classes_in_the_summary(exports):
    for form, root in exports.items():
        source = fridge_data.resolve_dataset(str(root))
        summary = source.summary()
        assert (summary["format"], summary["classes"], summary["images"], summary["boxes"]) == (
            form,
            list(FRIDGE_CLASSES),
            6,
            12,
        )
        assert not source.uses_synthetic and source.notes == ()


def test_coco_ids_need_not_be_contiguous_file_names_may_carry_a_folder_and_crowds_are_counted(exports, tmp_path):
    root = _copy(exports, "coco", tmp_path)
    path = root / "annotations" / "instances_default.json"
    coco = json.loads(path.read_text())
    new_ids = {1: 40, 2: 7, 3: 12, 4: 3}  # carton 40, milk_bottle 7, water_bottle 12, can 3
    for category in coco["categories"]:
        category["id"] = new_ids[category["id"]]
    for annotation in coco["annotations"]:
        annotation["category_id"] = new_ids[annotation["category_id"]]
    (root / "images" / "fridge").mkdir()
    for image in coco["images"]:
        shutil.move(root / "images" / image["file_name"], root / "images" / "fridge" / image["file_name"])
        image["file_name"] = f"fridge/{image['file_name']}"
    crowd = dict(coco["annotations"][0], id=99, iscrowd=1)
    coco["annotations"].append(crowd)
    path.write_text(json.dumps(coco))
    data = load(root)
    assert data.classes == ("can", "milk_bottle", "water_bottle", "carton")  # by category id
    assert [r[1:] for r in _as_training_records(root)] == [r[1:] for r in _as_training_records(SAMPLE)]
    assert data.crowd == 1 and data.notes() == [f"{root}: 1 COCO crowd box(es) (iscrowd=1) skipped"]


def test_coco_layouts_single_json_beside_the_images_and_the_split_folder_of_instances(exports, tmp_path):
    roboflow = tmp_path / "roboflow"
    shutil.copytree(exports["coco"] / "images", roboflow)
    shutil.copy(exports["coco"] / "annotations" / "instances_default.json", roboflow / "_annotations.coco.json")
    official = tmp_path / "official"
    shutil.copytree(exports["coco"] / "images", official / "val2017")
    (official / "annotations").mkdir()
    shutil.copy(
        exports["coco"] / "annotations" / "instances_default.json", official / "annotations/instances_val2017.json"
    )
    expected = [r[1:] for r in _as_training_records(SAMPLE)]
    for root in (roboflow, official):
        assert load(root).format == "coco"
        assert [r[1:] for r in _as_training_records(root)] == expected


def test_yolo_names_from_classes_txt_split_folders_and_background_images(exports, tmp_path):
    root = _copy(exports, "yolo", tmp_path)
    (root / "data.yaml").unlink()
    (root / "classes.txt").write_text("\n".join(FRIDGE_CLASSES) + "\n")
    for folder in ("images", "labels"):
        (root / folder / "val").mkdir()
    shutil.move(root / "images" / "15.jpg", root / "images" / "val" / "15.jpg")
    shutil.move(root / "labels" / "15.txt", root / "labels" / "val" / "15.txt")
    (root / "labels" / "14.txt").unlink()  # 14.jpg: a background image
    records = {relative_image(root, r.image_path).as_posix(): r for r in load(root).records}
    assert sorted(records) == ["10.jpg", "11.jpg", "12.jpg", "13.jpg", "14.jpg", "val/15.jpg"]
    assert records["14.jpg"].boxes == [] and records["val/15.jpg"].labels == ["milk_bottle", "can"]


def test_the_fridge_order_stays_for_fridge_data_and_other_voc_data_is_alphabetical(exports, tmp_path):
    root = _copy(exports, "voc", tmp_path)
    (root / "classes.txt").unlink()
    assert load(root).classes == FRIDGE_CLASSES
    for xml in (root / "annotations").glob("*.xml"):
        xml.write_text(xml.read_text().replace("<name>carton</name>", "<name>box</name>"))
    assert load(root).classes == ("box", "can", "milk_bottle", "water_bottle")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, path
    path.write_text(text.replace(old, new, 1))


def _coco_json(root: Path) -> Path:
    return root / "annotations" / "instances_default.json"


def _edit_coco(root: Path, change) -> None:
    coco = json.loads(_coco_json(root).read_text())
    change(coco)
    _coco_json(root).write_text(json.dumps(coco))


def _emptied(root: Path) -> None:
    for path in (root / "images").iterdir():
        path.unlink()
    for path in (root / "labels").iterdir():
        path.unlink()


BAD_DATA = {
    "coco-box-outside": ("coco", lambda r: _edit_coco(r, lambda c: c["annotations"][0].update(bbox=[400, 100, 200, 50])), "instances_default.json: 10.jpg: box [400.0, 100.0, 600.0, 150.0] (carton) outside the 499x666 image"),
    "coco-class-id-without-name": ("coco", lambda r: _edit_coco(r, lambda c: c["annotations"][0].update(category_id=9)), "instances_default.json: 10.jpg: category_id 9 has no name in 'categories'"),
    "coco-image-missing": ("coco", lambda r: (r / "images" / "10.jpg").unlink(), "instances_default.json: 10.jpg: image not found in images/, default/ or"),
    "coco-wrong-size": ("coco", lambda r: _edit_coco(r, lambda c: c["images"][0].update(width=640)), "instances_default.json: 10.jpg: annotated as 640x666 but 10.jpg is 499x666"),
    "coco-not-json": ("coco", lambda r: _coco_json(r).write_text("{"), "instances_default.json: not JSON"),
    "coco-duplicate-category": ("coco", lambda r: _edit_coco(r, lambda c: c["categories"][1].update(name="carton")), "instances_default.json: duplicate class names"),
    "coco-empty": ("coco", lambda r: _edit_coco(r, lambda c: c.update(images=[], annotations=[])), "empty dataset: no images"),
    "yolo-box-outside": ("yolo", lambda r: _edit(r / "labels" / "10.txt", "0 0.30260521", "0 1.20260521"), "labels/10.txt:1: box"),
    "yolo-class-id-without-name": ("yolo", lambda r: _edit(r / "labels" / "10.txt", "0 0.30", "7 0.30"), "labels/10.txt:1: class id 7 has no name (4 in data.yaml)"),
    "yolo-not-a-box": ("yolo", lambda r: _edit(r / "labels" / "10.txt", "0 0.30260521", "0 0.1 0.2 0.30260521"), "labels/10.txt:1: expected 'class cx cy w h', got 7 fields"),
    "yolo-image-does-not-open": ("yolo", lambda r: (r / "images" / "10.jpg").write_bytes(b"not a jpeg"), "images/10.jpg: image does not open"),
    "yolo-labels-without-image": ("yolo", lambda r: (r / "images" / "10.jpg").unlink(), "labels/10.txt: labels for no image (no images/10.*)"),
    "yolo-no-class-names": ("yolo", lambda r: (r / "data.yaml").unlink(), "YOLO labels without class names (data.yaml 'names' or classes.txt)"),
    "yolo-empty": ("yolo", _emptied, "empty dataset: no images"),
    "voc-image-does-not-open": ("voc", lambda r: (r / "images" / "12.jpg").write_bytes(b""), "images/12.jpg: image does not open"),
    "voc-unknown-class": ("voc", lambda r: _edit(r / "annotations" / "10.xml", "<name>carton</name>", "<name>pizza</name>"), "annotations/10.xml: unknown class 'pizza'"),
    "format-cannot-be-told": ("voc", lambda r: shutil.rmtree(r / "annotations"), "cannot tell the format; expected annotations/*.xml"),
    "two-formats": ("voc", lambda r: (r / "labels").mkdir(), "cannot tell the format, it looks like voc and yolo; keep one"),
}  # fmt: skip


@pytest.mark.parametrize("form, damage, message", BAD_DATA.values(), ids=BAD_DATA.keys())
def test_bad_data_is_one_line_naming_the_file(exports, tmp_path, form, damage, message):
    root = _copy(exports, form, tmp_path)
    damage(root)
    with pytest.raises(AnnotationError) as info:
        load(root)
    text = str(info.value)
    assert "\n" not in text and text.startswith(str(root)) and message in text, text


def test_skip_bad_leaves_the_bad_images_out_and_says_how_many(exports, tmp_path):
    root = _copy(exports, "yolo", tmp_path)
    _edit(root / "labels" / "10.txt", "0 0.30", "7 0.30")
    (root / "images" / "12.jpg").write_bytes(b"")
    with pytest.raises(AnnotationError, match="10.txt:1: class id 7"):
        load(root)
    data = load(root, skip_bad=True)
    assert sorted(r.image_path.name for r in data.records) == ["11.jpg", "13.jpg", "14.jpg", "15.jpg"]
    assert len(data.skipped) == 2 and data.notes()[-1] == f"{root}: --skip-bad skipped 2 bad image(s) or label(s)"


def test_convert_cli_writes_the_format_and_refuses_in_one_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "helpers.data", "convert", *args], capture_output=True, text=True)

    done = run(str(SAMPLE), "--to", "yolo", str(tmp_path / "yolo"))
    assert done.returncode == 0, done.stderr
    assert (
        "6 images, 12 boxes" in done.stdout and yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())["nc"] == 4
    )
    again = run(str(SAMPLE), "--to", "coco", str(tmp_path / "yolo"))
    assert (again.returncode, again.stderr) == (2, f"error: {tmp_path / 'yolo'}: exists and is not empty\n")
    missing = run(str(tmp_path / "nothing"), "--to", "voc", str(tmp_path / "out"))
    assert (missing.returncode, missing.stderr) == (2, f"error: {tmp_path / 'nothing'}: no such dataset folder\n")


@pytest.mark.slow
def test_a_coco_and_a_yolo_export_each_train_one_quick_epoch_with_the_datas_classes(exports, tmp_path):
    """The real train CLI on each export, the classes changed so that they can only come from the
    data: COCO's order by (non-contiguous) category id, YOLO's names from data.yaml; the YOLO run is
    exported, and the ONNX model the zip serves carries them too."""
    coco = _copy(exports, "coco", tmp_path)
    reorder = {1: 30, 2: 20, 3: 10, 4: 5}  # -> can, water_bottle, milk_bottle, carton
    _edit_coco(
        coco,
        lambda c: (
            [cat.update(id=reorder[cat["id"]]) for cat in c["categories"]],
            [a.update(category_id=reorder[a["category_id"]]) for a in c["annotations"]],
        ),
    )
    yolo = _copy(exports, "yolo", tmp_path)
    renamed = ("brick", "milk", "water", "tin")
    (yolo / "data.yaml").write_text(yaml.safe_dump({"names": list(renamed)}))
    for root, classes in ((coco, ("can", "water_bottle", "milk_bottle", "carton")), (yolo, renamed)):
        out = tmp_path / f"run-{root.name}"
        command = ["-m", "helpers", "train", "--dataset", str(root), "--epochs", "1", "--out", str(out)]
        result = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, env={**os.environ, "HELPERS_QUICK": "1"}
        )
        assert result.returncode == 0, result.stderr[-2000:]
        summary = RunSummary.load(out / "summary.json")
        assert (summary.data["format"], summary.data["classes"]) == (root.name, list(classes))
        checkpoint = torch.load(out / "best.ckpt", map_location="cpu", weights_only=False)
        assert tuple(checkpoint["hyper_parameters"]["class_names"]) == classes
    model = tmp_path / "model.onnx"
    exported = subprocess.run(
        [sys.executable, "-m", "helpers", "export", str(tmp_path / "run-yolo" / "best.ckpt"), "--out", str(model)],
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert Detector(model).class_map.names == renamed
