"""Fridge Objects data: the bundled sample, the 134 object photos with their hand-drawn boxes, seeded
splits (and the record of them a run leaves next to its checkpoint), a verified download, and the
dataset a run asks for by name or folder."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path

from PIL import Image

from helpers.data.formats import load
from helpers.data.formats.voc import parse_voc
from helpers.data.records import AnnotationError, Record
from helpers.paths import DATA_CACHE_DIR, PROJECT_ROOT, SAMPLE_DIR, THUMBNAILS_DIR, shown
from helpers.runtime.checksum import sha256_file
from helpers.runtime.config import FRIDGE_CLASSES

#: Official address of the full 128-image dataset (Microsoft computervision-recipes).
FRIDGE_URL = "https://cvbp-secondary.z19.web.core.windows.net/datasets/object_detection/odFridgeObjects.zip"
FRIDGE_IMAGE_COUNT = 128
#: Overrides FRIDGE_URL (a mirror, or a file:// zip of the same shape).
URL_VARIABLE = "FRIDGE_DATA_URL"
DATASET_CHOICES = ("fridge", "sample")

OFFLINE_MESSAGE = (
    "\n" + "!" * 78 + "\n"
    "!! The Fridge Objects dataset could not be downloaded from {url}\n"
    "!! ({error}).\n"
    "!! Training on the bundled SAMPLE instead (6 real images + the synthetic set); the\n"
    "!! summary and the model's metadata record data='sample (fridge unavailable: ...)'.\n" + "!" * 78
)


def load_sample() -> list[Record]:
    """The 6 real Fridge Objects images bundled in data/fridge-sample."""
    return parse_voc(SAMPLE_DIR / "annotations", SAMPLE_DIR / "images")


#: One tight box per object photo (file,label,xmin,ymin,xmax,ymax,note; VOC pixel edges), drawn by hand.
PHOTO_BOXES = "boxes.csv"


def object_photos(folder: Path = THUMBNAILS_DIR) -> list[Record]:
    """The object photos (`<class>_<n>.jpg`, 113x150) as single-object detection records, sorted by
    name: the box is the object's own from `boxes.csv`, not the photo's (the object covers a median
    18% of it). Every photo must have a box, and every box must fit its photo."""
    folder = Path(folder)
    table = folder / PHOTO_BOXES
    if not table.is_file():
        raise FileNotFoundError(f"{table}: no object boxes for the photos in {folder}")
    boxes = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] not in FRIDGE_CLASSES or row["file"].rsplit("_", 1)[0] != row["label"]:
                raise AnnotationError(f"{table}: {row['file']}: label {row['label']!r} does not match the file")
            boxes[row["file"]] = (tuple(float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax")), row["label"])
    records = []
    for path in sorted(folder.glob("*.jpg")):
        if path.name not in boxes:
            raise AnnotationError(f"{table}: no box for {path.name}")
        (x1, y1, x2, y2), label = boxes.pop(path.name)
        with Image.open(path) as image:
            width, height = image.size
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise AnnotationError(f"{table}: box {[x1, y1, x2, y2]} of {path.name} outside its {width}x{height} photo")
        records.append(Record(path, width, height, [(x1, y1, x2, y2)], [label]))
    if boxes:
        raise AnnotationError(f"{table}: boxes for missing photos {sorted(boxes)}")
    return records


def class_counts(records: list[Record]) -> Counter:
    return Counter(label for r in records for label in r.labels)


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


@dataclasses.dataclass
class DataSource:
    """The real images a run trains and validates on, and how they were obtained."""

    name: str  # "fridge", "sample", or the VOC folder given
    requested: str
    root: Path
    records: list[Record]
    url: str | None = None
    fallback_reason: str | None = None  # set when `requested` could not be had
    classes: tuple[str, ...] = FRIDGE_CLASSES  # the data's own, in its order (helpers.data.formats)
    format: str = "voc"
    notes: tuple[str, ...] = ()  # what reading it left out (--skip-bad, COCO crowd boxes), a line each

    @property
    def uses_synthetic(self) -> bool:
        """Only the 6-image sample needs the synthetic set; real datasets train on themselves."""
        return self.name == "sample"

    def describe(self) -> str:
        """One line for metadata: what was used, and why if it is not what was asked for."""
        if self.fallback_reason:
            return f"{self.name} ({self.requested} unavailable: {self.fallback_reason})"
        return self.name if self.url is None else f"{self.name} ({self.url})"

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "requested": self.requested,
            "description": self.describe(),
            "root": shown(self.root),
            "url": self.url,
            "fallback_reason": self.fallback_reason,
            "format": self.format,
            "classes": list(self.classes),
            "notes": list(self.notes),
            "images": len(self.records),
            "boxes": sum(len(r.boxes) for r in self.records),
            "boxes_per_class": dict(sorted(class_counts(self.records).items())),
        }


def fridge_url() -> str:
    return os.environ.get(URL_VARIABLE) or FRIDGE_URL


def resolve_dataset(requested: str, cache_dir: Path = DATA_CACHE_DIR, skip_bad: bool = False) -> DataSource:
    """ "fridge" (download, verified and cached; on a network failure, say so loudly and use the
    sample), "sample" (bundled), or a dataset folder in VOC, COCO or YOLO form (helpers.data.formats;
    `skip_bad` leaves its bad images out, each named on stderr).

    Only an unreachable address falls back: a download that arrives but fails verification, or a
    folder that is not a dataset, is an error, since training on something else would hide it.
    """
    if requested == "sample":
        return DataSource("sample", requested, SAMPLE_DIR, load_sample())
    if requested == "fridge":
        url = fridge_url()
        folder = Path(cache_dir) / hashlib.sha256(url.encode()).hexdigest()[:16]
        try:
            root = download(folder, url)
        except OSError as err:  # urllib's URLError, timeouts, DNS: the address cannot be reached
            reason = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            print(OFFLINE_MESSAGE.format(url=url, error=reason), file=sys.stderr)
            return DataSource("sample", requested, SAMPLE_DIR, load_sample(), fallback_reason=reason)
        return DataSource("fridge", requested, root, parse_voc(root / "annotations", root / "images"), url=url)
    root = Path(requested)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {requested!r}: not {' or '.join(DATASET_CHOICES)}, nor a folder")
    data = load(root, skip_bad)
    notes = tuple(data.notes())
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return DataSource(str(root), requested, root, data.records, classes=data.classes, format=data.format, notes=notes)


@dataclasses.dataclass(frozen=True)
class Split:
    """The images a run trained and validated on, by file name. Training writes it next to its
    checkpoint (helpers.paths.split_file); INT8 calibration, export parity, the benchmark and the
    notebooks read it instead of recomputing the split.

    With the sample, the real images are the fridge photos (`root`) and the object photos
    (`photos_root`); their file names do not collide. Three disjoint parts (helpers.data.splits):
    `train`; `valid`, which chose the checkpoint and the served threshold; `test`, which chose nothing
    and is what every result is reported on. No training image or composite shows a valid or test photo."""

    dataset: str
    root: Path  # the real images' folder (images/ + annotations/)
    train: tuple[str, ...]  # real training images (synthetic composites are not listed)
    valid: tuple[str, ...]  # the selection record's images: checkpoint and served threshold
    test: tuple[str, ...]  # the report's images: they chose nothing
    synthetic_holdout: Path | None = None  # VOC folder of synthetic images made from the hold-out photos
    photos_root: Path | None = None  # the object photos with boxes.csv, when the run used them

    def write(self, path: str | Path) -> None:
        path = Path(path)
        holdout = self.synthetic_holdout and self.synthetic_holdout.relative_to(path.parent).as_posix()
        record = {
            "dataset": self.dataset,
            "root": shown(self.root),
            "photos_root": self.photos_root and shown(self.photos_root),
            "train": list(self.train),
            "valid": list(self.valid),
            "test": list(self.test),
            "synthetic_holdout": holdout,
        }
        path.write_text(json.dumps(record, indent=1))

    @classmethod
    def read(cls, path: str | Path) -> Split:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no split record (written by training next to its checkpoint)")
        record = json.loads(path.read_text())

        def located(folder: str) -> Path:
            return Path(folder) if Path(folder).is_absolute() else PROJECT_ROOT / folder

        return cls(
            record["dataset"],
            located(record["root"]),
            tuple(record["train"]),
            tuple(record["valid"]),
            tuple(record["test"]),
            path.parent / record["synthetic_holdout"] if record["synthetic_holdout"] else None,
            located(record["photos_root"]) if record.get("photos_root") else None,
        )

    def real(self, part: str = "all") -> list[Record]:
        """The real records of "train", "valid", "test" or "all" (in that order), in the split's order."""
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        names = parts[part] if part in parts else self.train + self.valid + self.test
        records = load(self.root, skip_bad=True).records  # whatever the format; the split lists no bad image
        records += object_photos(self.photos_root) if self.photos_root else []
        by_name = {r.image_path.name: r for r in records}
        return [by_name[name] for name in names]

    def holdout(self) -> list[Record]:
        """The synthetic hold-out (a secondary figure), or [] when the run made none."""
        if self.synthetic_holdout is None:
            return []
        return parse_voc(self.synthetic_holdout / "annotations", self.synthetic_holdout / "images")

    def evaluation(self) -> list[Record]:
        """What a model is judged on: the test images (object photos and fridge photos that chose
        nothing). The synthetic hold-out is not part of it."""
        return self.real("test")

    def validation(self) -> list[Record]:
        """The images that chose the checkpoint and the served threshold: the selection record's."""
        return self.real("valid")


def letterboxed_box_sides(records: list[Record], image_size: int) -> list[float]:
    """Each box's side as the model sees it: sqrt(width * height) after the letterbox scales the image's
    longest side to image_size (the size anchors must cover)."""
    return [
        math.sqrt((x2 - x1) * (y2 - y1)) * image_size / max(r.width, r.height)
        for r in records
        for x1, y1, x2, y2 in r.boxes
    ]
