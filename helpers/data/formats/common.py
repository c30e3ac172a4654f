"""What the three format parsers share: the image's size as training sees it, box checks, class lists,
and the --skip-bad bookkeeping. Every problem is an AnnotationError whose one line names the file."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from helpers.data.records import AnnotationError, Record
from helpers.runtime.classmap import ClassMap
from helpers.runtime.decode import exif_orientation, upright_size

#: Overshoot clipped without complaint: exports round normalised or float coordinates past the edge.
EDGE_SLACK = 1.0


@dataclasses.dataclass
class Annotations:
    """A dataset read from a folder: its records, its classes in the data's own order, and what was left out."""

    format: str  # "voc", "coco" or "yolo"
    root: Path
    classes: tuple[str, ...]
    records: list[Record]
    skipped: list[str]  # one line per bad image or label left out (--skip-bad)
    crowd: int = 0  # COCO crowd regions (iscrowd=1): not boxes of one object

    def notes(self) -> list[str]:
        """One line per thing the reader left out, then the counts, for the log and summary.json."""
        lines = [f"skipped: {line}" for line in self.skipped]
        if self.skipped:
            lines.append(f"{self.root}: --skip-bad skipped {len(self.skipped)} bad image(s) or label(s)")
        if self.crowd:
            lines.append(f"{self.root}: {self.crowd} COCO crowd box(es) (iscrowd=1) skipped")
        return lines


class BadData:
    """Raises the first bad image's error, or with `skip_bad` leaves that image out and keeps its line."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: list[str] = []

    @contextlib.contextmanager
    def guard(self):
        try:
            yield
        except AnnotationError as err:
            if not self.skip_bad:
                raise
            self.skipped.append(str(err))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image as training decodes it (EXIF orientation applied): the space the
    boxes must be in. Only the header is read."""
    try:
        with Image.open(path) as image:
            width, height = upright_size(*image.size, exif_orientation(image))
    except UnidentifiedImageError:
        raise AnnotationError(f"{path}: image does not open (not a format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated, unreadable, corrupt header
        raise AnnotationError(f"{path}: image does not open ({type(err).__name__}: {err})") from None
    return width, height


def check_size(where: str, path: Path, width: int, height: int) -> None:
    """The annotated size must be the image's: otherwise the boxes are in some other space."""
    actual = image_size(path)
    if actual != (width, height):
        raise AnnotationError(f"{where}: annotated as {width}x{height} but {path.name} is {actual[0]}x{actual[1]}")


def pixel_box(where: str, box, width: int, height: int, label: str) -> tuple[float, float, float, float]:
    """xyxy pixels inside the image (overshoot up to EDGE_SLACK clipped), or an error naming `where`."""
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = [round(v, 2) for v in (x1, y1, x2, y2)]
    if not (x1 < x2 and y1 < y2):
        raise AnnotationError(f"{where}: empty or inverted box {shown} ({label})")
    if min(x1, y1) < -EDGE_SLACK or x2 > width + EDGE_SLACK or y2 > height + EDGE_SLACK:
        raise AnnotationError(f"{where}: box {shown} ({label}) outside the {width}x{height} image")
    return max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)


def class_names(names, where: Path) -> tuple[str, ...]:
    """A valid class list (non-empty, unique, no 'background'), or an error naming the file it came from."""
    try:
        return ClassMap(str(n) for n in names).names
    except ValueError as err:
        raise AnnotationError(f"{where}: {err}") from None


def relative_image(root: Path, path: Path) -> Path:
    """The image's path inside the dataset, without a leading images/: where a conversion puts it."""
    try:
        relative = path.relative_to(root)
    except ValueError:  # a COCO file_name reaching outside the folder
        return Path(path.name)
    return Path(*relative.parts[1:]) if relative.parts[0] == "images" and len(relative.parts) > 1 else relative
