"""COCO JSON: annotations/instances_*.json (images in images/, in a folder named after the file, e.g.
train2017/, or in images/<that name>/), or a single *.json in the folder (images in images/ or beside
it). Boxes are [x, y, width, height] in pixels; category ids need not be contiguous nor start at 1
(the classes are the categories in id order); `file_name` may carry a subfolder. Crowd regions
(iscrowd=1) are skipped and counted: they are not one object's box. Several instances files are one
dataset (the training run makes its own split), so their categories must agree."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from helpers.data.formats.common import (
    Annotations,
    BadData,
    check_size,
    class_names,
    image_size,
    pixel_box,
    relative_image,
)
from helpers.data.records import AnnotationError, Record


def xywh(box) -> list[float]:
    """An xyxy box as COCO's [x, y, width, height]."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_instances(images, class_names) -> dict:
    """A COCO instances dataset, the one COCO writer: `images` holds (file_name, width, height, xyxy
    boxes, category ids) per image; ids count from 1 in order, category i + 1 is class_names[i]."""
    entries, annotations = [], []
    for image_id, (file_name, width, height, boxes, category_ids) in enumerate(images, 1):
        entries.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for box, category in zip(boxes, category_ids):
            bbox = xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(category),
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for i, name in enumerate(class_names, 1)]
    return {"images": entries, "annotations": annotations, "categories": categories}


def instances_files(root: Path) -> list[Path]:
    return sorted((root / "annotations").glob("instances_*.json"))


def matches(root: Path) -> bool:
    return bool(instances_files(root))


def single_file(root: Path) -> list[Path]:
    """The folder's one *.json, told as COCO only when no other layout matches (it may be a tool's notes)."""
    found = sorted(root.glob("*.json"))
    return found if len(found) == 1 else []


def load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise AnnotationError(f"{path}: not JSON ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise AnnotationError(f"{path}: not a COCO instances file (needs 'images' and 'categories' lists)")
    data.setdefault("annotations", [])
    if not all(isinstance(entry, dict) for key in ("images", "annotations", "categories") for entry in data[key]):
        raise AnnotationError(f"{path}: 'images', 'annotations' and 'categories' must be lists of objects")
    return data


def categories(path: Path, data: dict) -> dict[int, str]:
    """{category id: name} in id order."""
    try:
        by_id = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(f"{path}: every category needs an integer 'id' and a 'name'") from None
    if len(by_id) != len(data["categories"]):
        raise AnnotationError(f"{path}: duplicate category ids")
    ordered = dict(sorted(by_id.items()))
    class_names(ordered.values(), path)
    return ordered


def image_folders(root: Path, path: Path) -> list[Path]:
    """Where a JSON file's `file_name`s are looked up, first match wins."""
    split = path.stem.removeprefix("instances_")
    folders = [root / "images", root / split, root / "images" / split, path.parent, root]
    return list(dict.fromkeys(folders))


def read_image(root: Path, path: Path, image: dict, annotations: list[dict], names: dict[int, str]) -> Record:
    try:
        file_name, width, height = str(image["file_name"]), image.get("width"), image.get("height")
    except KeyError:
        raise AnnotationError(f"{path}: image {image!r:.80} has no 'file_name'") from None
    where = f"{path}: {file_name}"
    found = next((f / file_name for f in image_folders(root, path) if (f / file_name).is_file()), None)
    if found is None:
        raise AnnotationError(f"{where}: image not found in images/, {path.stem.removeprefix('instances_')}/ or {root}")
    if width is None or height is None:  # optional in some exports: the image says
        width, height = image_size(found)
    check_size(where, found, width, height)
    boxes, labels = [], []
    for annotation in annotations:
        category = annotation.get("category_id")
        if category not in names:
            raise AnnotationError(f"{where}: category_id {category!r} has no name in 'categories'")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise AnnotationError(f"{where}: annotation {annotation.get('id')}: bbox {bbox!r} is not [x, y, w, h]")
        x, y, w, h = bbox
        boxes.append(pixel_box(where, (x, y, x + w, y + h), width, height, names[category]))
        labels.append(names[category])
    return Record(found, width, height, boxes, labels)


def read(root: Path, bad: BadData) -> Annotations:
    files = instances_files(root) or single_file(root)
    names: dict[int, str] | None = None
    records, crowd = [], 0
    for path in files:
        data = load_json(path)
        these = categories(path, data)
        if names is not None and these != names:
            raise AnnotationError(f"{path}: categories differ from {files[0].name}'s")
        names = these
        image_ids = {image.get("id") for image in data["images"]}
        by_image = defaultdict(list)
        for annotation in data["annotations"]:
            if annotation.get("iscrowd"):
                crowd += 1
            elif annotation.get("image_id") in image_ids:
                by_image[annotation["image_id"]].append(annotation)
            else:
                with bad.guard():
                    raise AnnotationError(
                        f"{path}: annotation {annotation.get('id')} is of image_id {annotation.get('image_id')!r}, "
                        "which is not in 'images'"
                    )
        for image in data["images"]:
            with bad.guard():
                records.append(read_image(root, path, image, by_image[image.get("id")], names))
    records.sort(key=lambda r: relative_image(root, r.image_path).as_posix())
    return Annotations("coco", root, tuple(names.values()), records, bad.skipped, crowd)
