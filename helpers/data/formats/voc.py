"""PASCAL VOC: annotations/*.xml, one per image (size and xyxy boxes in pixels), images in images/.
Parsed by helpers.data.dataset.parse_voc_file, as before; the images must also open at the annotated
size. VOC has no class list, so the order is: classes.txt in the folder (written by a conversion to
VOC), else the Fridge order when every name is a Fridge class (the Fridge data keeps its order), else
alphabetical."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from helpers.data.dataset import AnnotationError, parse_voc_file
from helpers.data.formats.common import Annotations, BadData, check_size, class_names
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES

CLASSES_FILE = "classes.txt"


def matches(root: Path) -> bool:
    return any((root / "annotations").glob("*.xml"))


def class_order(root: Path, xml_files: list[Path]) -> tuple[str, ...]:
    listed = root / CLASSES_FILE
    if listed.is_file():
        return class_names(listed.read_text().split(), listed)
    names = set()
    for path in xml_files:
        try:
            names.update(node.text.strip() for node in ET.parse(path).getroot().iterfind("object/name") if node.text)
        except ET.ParseError:
            continue  # parse_voc_file names the file
    if names <= set(FRIDGE_CLASSES):
        return tuple(name for name in FRIDGE_CLASSES if name in names)
    return tuple(sorted(names))


def read(root: Path, bad: BadData) -> Annotations:
    xml_files = sorted((root / "annotations").glob("*.xml"))
    classes = class_order(root, xml_files)
    if not classes:
        raise AnnotationError(f"{root}: empty dataset: no <object> in annotations/*.xml")
    class_map = ClassMap(classes)
    records = []
    for xml_path in xml_files:
        with bad.guard():
            record = parse_voc_file(xml_path, root / "images", class_map)
            check_size(str(xml_path), record.image_path, record.width, record.height)
            records.append(record)
    return Annotations("voc", root, classes, records, bad.skipped)
