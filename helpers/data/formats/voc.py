"""PASCAL VOC: annotations/*.xml, one per image (size and xyxy boxes in pixels), images in images/;
the one VOC reader and writer of the project. As a dataset folder the images must also open at the
annotated size. VOC has no class list, so the order is: classes.txt in the folder (written by a
conversion to VOC), else the Fridge order when every name is a Fridge class (the Fridge data keeps its
order), else alphabetical."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

from helpers.data.formats.common import Annotations, BadData, check_size, class_names
from helpers.data.records import AnnotationError, Record
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES

CLASSES_FILE = "classes.txt"


def _text(node: ET.Element, tag: str, xml_path: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise AnnotationError(f"{xml_path}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_path: Path) -> float:
    text = _text(node, tag, xml_path)
    try:
        return float(text)
    except ValueError:
        raise AnnotationError(f"{xml_path}: <{tag}> is not a number: {text!r}") from None


def parse_voc_file(xml_path: Path, images_dir: Path, class_map: ClassMap) -> Record:
    """One VOC XML -> Record, validating image presence, class names and box geometry."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{xml_path}: malformed XML ({err})") from None
    image_path = images_dir / _text(root, "filename", xml_path)
    if not image_path.is_file():
        raise AnnotationError(f"{xml_path}: image not found: {image_path}")
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{xml_path}: missing <size>")
    width, height = int(_number(size, "width", xml_path)), int(_number(size, "height", xml_path))
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = _text(obj, "name", xml_path)
        if name not in class_map.names:
            raise AnnotationError(f"{xml_path}: unknown class {name!r}; known: {list(class_map.names)}")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{xml_path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(bndbox, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (x1 < x2 and y1 < y2):
            raise AnnotationError(f"{xml_path}: inverted or empty box {[x1, y1, x2, y2]} ({name})")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise AnnotationError(f"{xml_path}: box {[x1, y1, x2, y2]} ({name}) outside the {width}x{height} image")
        boxes.append((x1, y1, x2, y2))
        labels.append(name)
    return Record(image_path, width, height, boxes, labels)


def parse_voc(annotations_dir: Path, images_dir: Path, class_map: ClassMap | None = None) -> list[Record]:
    """All *.xml in `annotations_dir` (Fridge classes by default), sorted by file name (so the result
    is deterministic)."""
    class_map = class_map or ClassMap(FRIDGE_CLASSES)
    xml_files = sorted(Path(annotations_dir).glob("*.xml"))
    if not xml_files:
        raise AnnotationError(f"{annotations_dir}: no .xml annotation files")
    return [parse_voc_file(p, Path(images_dir), class_map) for p in xml_files]


def _coordinate(value: float) -> str:
    """Pixels as written: whole numbers stay whole, else two decimals (a hundredth of a pixel)."""
    return f"{round(value, 2):g}"


def voc_xml(filename: str, width: int, height: int, boxes, labels, database: str | None = None, photos=None) -> str:
    """One image's VOC XML. `database` goes in <source><database>; `photos`, one per box, in each
    object's <photo> (readers ignore both: the synthetic set names itself and its source photos)."""
    photos = photos if photos is not None else [None] * len(labels)
    objects = "".join(
        f"\t<object>\n\t\t<name>{escape(label)}</name>\n"
        + (f"\t\t<photo>{escape(photo)}</photo>\n" if photo is not None else "")
        + "\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        + "".join(f"\t\t\t<{tag}>{_coordinate(v)}</{tag}>\n" for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        + "\t\t</bndbox>\n\t</object>\n"
        for box, label, photo in zip(boxes, labels, photos)
    )
    source = f"\t<source>\n\t\t<database>{escape(database)}</database>\n\t</source>\n" if database else ""
    return (
        f"<annotation>\n\t<folder>images</folder>\n\t<filename>{escape(filename)}</filename>\n{source}"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n{objects}</annotation>\n"
    )


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
