"""Datasets in the formats annotation tools export, told apart by the folder's layout and read into
the same Records (image file, size, xyxy boxes in pixels, labels) with the classes in the data's own
order: PASCAL VOC (voc.py), COCO JSON (coco.py), YOLO txt (yolo.py). Bad data is an AnnotationError
whose one line names the file; with `skip_bad`, the bad images are left out and listed instead."""

from __future__ import annotations

from pathlib import Path

from helpers.data.formats import coco, voc, yolo
from helpers.data.formats.common import Annotations, BadData
from helpers.data.records import AnnotationError

FORMATS = ("voc", "coco", "yolo")
LAYOUTS = (
    "annotations/*.xml + images/ (VOC), annotations/instances_*.json or one *.json (COCO), images/ + labels/ (YOLO)"
)


def detect(root: Path) -> str:
    """Exactly one layout may match; a lone *.json counts as COCO only when nothing else does (it may
    be a tool's notes beside a YOLO export)."""
    found = [
        name
        for name, matches in (("voc", voc.matches), ("coco", coco.matches), ("yolo", yolo.matches))
        if matches(root)
    ]
    if len(found) > 1:
        raise AnnotationError(f"{root}: cannot tell the format, it looks like {' and '.join(found)}; keep one")
    if not found and coco.single_file(root):
        found.append("coco")
    if not found:
        raise AnnotationError(f"{root}: cannot tell the format; expected {LAYOUTS}")
    return found[0]


def load(root: str | Path, skip_bad: bool = False) -> Annotations:
    """The dataset in `root`, whichever format it is in. Refuses an empty one (no images, or no box)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    loaded = {"voc": voc.read, "coco": coco.read, "yolo": yolo.read}[detect(root)](root, BadData(skip_bad))
    if not loaded.records:
        skipped = f" (all {len(loaded.skipped)} skipped as bad)" if loaded.skipped else ""
        raise AnnotationError(f"{root}: empty dataset: no images{skipped}")
    if not any(r.boxes for r in loaded.records):
        raise AnnotationError(f"{root}: empty dataset: {len(loaded.records)} images and not one box")
    return loaded
