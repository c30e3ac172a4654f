"""A dataset from one format to another (VOC, COCO, YOLO), images copied beside the annotations, the
class order kept (COCO category ids 1..n, YOLO ids 0..n-1, VOC's classes.txt): what a conversion
writes reads back as the same records, within rounding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from helpers.data.formats import FORMATS, load
from helpers.data.formats.coco import coco_instances
from helpers.data.formats.common import Annotations, relative_image
from helpers.data.formats.voc import CLASSES_FILE, voc_xml
from helpers.data.records import Record


def convert(src: str | Path, to: str, dst: str | Path, skip_bad: bool = False) -> Annotations:
    """Read `src` (any format), write it to the new folder `dst` in format `to`; -> what was read."""
    if to not in FORMATS:
        raise ValueError(f"unknown format {to!r}; choose from {FORMATS}")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst}: exists and is not empty")
    data = load(src, skip_bad)
    images = [relative_image(data.root, r.image_path) for r in data.records]
    if len(set(images)) != len(images):
        raise ValueError(f"{src}: two images at the same path inside the dataset; cannot lay them out")
    for record, image in zip(data.records, images):
        (dst / "images" / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(record.image_path, dst / "images" / image)
    {"voc": write_voc, "coco": write_coco, "yolo": write_yolo}[to](dst, data.classes, data.records, images)
    return data


def write_voc(dst: Path, classes: tuple[str, ...], records: list[Record], images: list[Path]) -> None:
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    (dst / CLASSES_FILE).write_text("".join(f"{name}\n" for name in classes))
    for record, image in zip(records, images):
        xml = voc_xml(image.as_posix(), record.width, record.height, record.boxes, record.labels)
        # One XML per image, named after its path (subfolders joined by "__") so names cannot collide.
        (dst / "annotations" / ("__".join(image.with_suffix("").parts) + ".xml")).write_text(xml)


def write_coco(dst: Path, classes: tuple[str, ...], records: list[Record], images: list[Path]) -> None:
    ids = {name: i + 1 for i, name in enumerate(classes)}
    entries = [
        (image.as_posix(), r.width, r.height, r.boxes, [ids[label] for label in r.labels])
        for r, image in zip(records, images)
    ]
    coco = coco_instances(entries, classes)
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    (dst / "annotations" / "instances_default.json").write_text(json.dumps(coco, indent=1))


def write_yolo(dst: Path, classes: tuple[str, ...], records: list[Record], images: list[Path]) -> None:
    """Also a data.yaml Ultralytics can train from (train and val both images/: we split ourselves)."""
    ids = {name: i for i, name in enumerate(classes)}
    for record, image in zip(records, images):
        lines = [
            f"{ids[label]} {(x1 + x2) / 2 / record.width:.8f} {(y1 + y2) / 2 / record.height:.8f} "
            f"{(x2 - x1) / record.width:.8f} {(y2 - y1) / record.height:.8f}\n"
            for (x1, y1, x2, y2), label in zip(record.boxes, record.labels)
        ]
        label_file = dst / "labels" / image.with_suffix(".txt")
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(lines))
    names = {"train": "images", "val": "images", "nc": len(classes), "names": dict(enumerate(classes))}
    (dst / "data.yaml").write_text(yaml.safe_dump(names, sort_keys=False))
