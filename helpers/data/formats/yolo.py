"""YOLO txt: images/ and labels/ side by side (subfolders such as train/ and val/ mirrored), one
labels/<image stem>.txt per image with a `class cx cy w h` line per box, normalised to the image's
size; class names from data.yaml (`names`, a list or {id: name}) or classes.txt (one a line, in the
folder or in labels/). An image without a label file, or with an empty one, is a background image."""

from __future__ import annotations

from pathlib import Path

import yaml

from helpers.data.formats.common import Annotations, BadData, class_names, image_size, pixel_box
from helpers.data.records import AnnotationError, Record

#: The image files a YOLO export holds (Ultralytics reads no GIF); others in images/ are not dataset images.
YOLO_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "labels/classes.txt")


def matches(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "labels").is_dir()


def read_class_names(root: Path) -> tuple[tuple[str, ...], Path]:
    """-> (names by class id, the file they came from)."""
    for name in NAME_FILES:
        path = root / name
        if not path.is_file():
            continue
        if path.suffix == ".txt":
            return class_names([line.strip() for line in path.read_text().splitlines() if line.strip()], path), path
        try:
            names = (yaml.safe_load(path.read_text()) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as err:
            raise AnnotationError(f"{path}: not a YAML mapping ({type(err).__name__})") from None
        if isinstance(names, dict) and sorted(names) == list(range(len(names))):
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list):
            raise AnnotationError(f"{path}: 'names' must be a list or {{0: name, 1: name, ...}}")
        return class_names(names, path), path
    raise AnnotationError(f"{root}: YOLO labels without class names (data.yaml 'names' or classes.txt)")


def read_record(image: Path, label: Path, classes: tuple[str, ...], names_file: Path) -> Record:
    width, height = image_size(image)
    boxes, labels = [], []
    lines = label.read_text().splitlines() if label.is_file() else []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label}:{number}"
        if len(fields) != 5:
            raise AnnotationError(f"{where}: expected 'class cx cy w h', got {len(fields)} fields")
        try:
            class_id, (cx, cy, w, h) = int(fields[0]), map(float, fields[1:])
        except ValueError:
            raise AnnotationError(f"{where}: not a class id and four numbers: {line.strip()!r}") from None
        if not 0 <= class_id < len(classes):
            raise AnnotationError(f"{where}: class id {class_id} has no name ({len(classes)} in {names_file.name})")
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        boxes.append(pixel_box(where, box, width, height, classes[class_id]))
        labels.append(classes[class_id])
    return Record(image, width, height, boxes, labels)


def read(root: Path, bad: BadData) -> Annotations:
    classes, names_file = read_class_names(root)
    images_dir, labels_dir = root / "images", root / "labels"
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in YOLO_IMAGE_SUFFIXES and p.is_file())
    records, labelled = [], set()
    for image in images:
        label = labels_dir / image.relative_to(images_dir).with_suffix(".txt")
        labelled.add(label)
        with bad.guard():
            records.append(read_record(image, label, classes, names_file))
    for label in sorted(set(labels_dir.rglob("*.txt")) - labelled - {root / "labels/classes.txt"}):
        with bad.guard():
            raise AnnotationError(
                f"{label}: labels for no image (no images/{label.relative_to(labels_dir).with_suffix('.*')})"
            )
    return Annotations("yolo", root, classes, records, bad.skipped)
