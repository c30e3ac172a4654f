"""Fridge Objects data: PASCAL VOC parsing with clear errors, a seeded split, and a verified download."""

from __future__ import annotations

import dataclasses
import random
import shutil
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path

from helpers.config import FRIDGE_CLASSES
from helpers.runtime.checksum import sha256_file
from helpers.runtime.classmap import ClassMap

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
SAMPLE_DIR = DATA_DIR / "fridge-sample"
THUMBNAILS_DIR = DATA_DIR / "fridge-classification-small150"

#: Official address of the full 128-image dataset (Microsoft computervision-recipes).
FRIDGE_URL = (
    "https://cvbp-secondary.z19.web.core.windows.net/datasets/object_detection/odFridgeObjects.zip"
)
FRIDGE_IMAGE_COUNT = 128


class AnnotationError(ValueError):
    """An annotation file that cannot become a record; the message names the file."""


@dataclasses.dataclass
class Record:
    image_path: Path
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]  # xyxy, pixels
    labels: list[str]


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
            raise AnnotationError(
                f"{xml_path}: unknown class {name!r}; known: {list(class_map.names)}"
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{xml_path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(bndbox, t, xml_path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (x1 < x2 and y1 < y2):
            raise AnnotationError(f"{xml_path}: inverted or empty box {[x1, y1, x2, y2]} ({name})")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise AnnotationError(
                f"{xml_path}: box {[x1, y1, x2, y2]} ({name}) outside the {width}x{height} image"
            )
        boxes.append((x1, y1, x2, y2))
        labels.append(name)
    return Record(image_path, width, height, boxes, labels)


def parse_voc(
    annotations_dir: Path, images_dir: Path, class_map: ClassMap | None = None
) -> list[Record]:
    """All *.xml in `annotations_dir`, sorted by file name (so the result is deterministic)."""
    class_map = class_map or ClassMap(FRIDGE_CLASSES)
    xml_files = sorted(Path(annotations_dir).glob("*.xml"))
    if not xml_files:
        raise AnnotationError(f"{annotations_dir}: no .xml annotation files")
    return [parse_voc_file(p, Path(images_dir), class_map) for p in xml_files]


def load_sample() -> list[Record]:
    """The 6 real Fridge Objects images bundled in data/fridge-sample."""
    return parse_voc(SAMPLE_DIR / "annotations", SAMPLE_DIR / "images")


def class_counts(records: list[Record]) -> Counter:
    return Counter(label for r in records for label in r.labels)


def split(records: list[Record], valid_fraction: float = 0.2, seed: int = 42):
    """Seeded random split (IceVision's RandomSplitter default 80/20); at least one of each."""
    if len(records) < 2:
        raise ValueError("need at least 2 records to split")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_valid = min(len(records) - 1, max(1, round(len(records) * valid_fraction)))
    valid_ids = set(order[:n_valid])
    train = [r for i, r in enumerate(records) if i not in valid_ids]
    valid = [r for i, r in enumerate(records) if i in valid_ids]
    return train, valid


def download(
    dest: Path,
    url: str = FRIDGE_URL,
    sha256: str | None = None,
    expected_images: int | None = FRIDGE_IMAGE_COUNT,
) -> Path:
    """Download (once), verify and extract the full dataset; returns the folder with images/ + annotations/.

    The archive is cached in `dest`; a cached archive is reused only if it verifies. Verification is
    the sha256 when given, and always that it parses to `expected_images` records.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / Path(url).name
    if archive.exists() and sha256 and sha256_file(archive) != sha256:
        archive.unlink()
    if not archive.exists():
        partial = archive.with_suffix(".part")
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        partial.rename(archive)
    if sha256 and (actual := sha256_file(archive)) != sha256:
        archive.unlink()
        raise ValueError(f"{url}: sha256 {actual} != expected {sha256}; download removed")
    if not zipfile.is_zipfile(archive):
        raise ValueError(f"{archive}: not a zip archive")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    roots = [p.parent for p in dest.rglob("annotations") if (p.parent / "images").is_dir()]
    if len(roots) != 1:
        raise ValueError(f"{archive}: expected one folder with images/ and annotations/")
    records = parse_voc(roots[0] / "annotations", roots[0] / "images")
    if expected_images is not None and len(records) != expected_images:
        raise ValueError(f"{archive}: {len(records)} annotated images, expected {expected_images}")
    return roots[0]
