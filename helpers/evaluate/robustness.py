"""Robustness: recall and precision at the served threshold when the test images are mirrored, darker
or brighter, re-compressed, rescaled or EXIF-rotated, and false detections per image on images with
no fridge object (helpers.data.empty).

Each perturbation takes an image (file bytes or an upright Pillow image) and its boxes and returns the
file a user would send (bytes) with the boxes in that file's upright pixels. Files are PNG except the
JPEG row, so each row differs from the clean one by its perturbation alone (no second JPEG loss);
the clean row is the original file itself.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from helpers.data.records import Record
from helpers.evaluate.intervals import Interval, resample_weights
from helpers.evaluate.metrics import found_boxes
from helpers.runtime.classmap import ClassMap
from helpers.runtime.decode import EXIF_ORIENTATION, decode_for_model
from helpers.runtime.detections import Detections

Box = tuple[float, float, float, float]


#: The targets `helpers evaluate` judges: recall under each perturbation within this of the clean
#: recall, and at most this many false detections per image with no fridge object.
MAX_RECALL_DROP = 0.1
MAX_FALSE_PER_EMPTY_IMAGE = 0.1


@dataclasses.dataclass(frozen=True)
class Perturbed:
    """An image file as a user would send it, and the boxes in its upright (EXIF-applied) pixels."""

    data: bytes
    boxes: list[Box]


Perturbation = Callable[[bytes | Image.Image, list[Box]], Perturbed]


def upright(image: bytes | Image.Image) -> Image.Image:
    """RGB pixels as the served decoder sees them: EXIF orientation applied."""
    if isinstance(image, bytes):
        with Image.open(io.BytesIO(image)) as opened:
            return ImageOps.exif_transpose(opened).convert("RGB")
    return image.convert("RGB")


def _png(image: Image.Image, exif: Image.Exif | None = None) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **({"exif": exif} if exif is not None else {}))
    return out.getvalue()


def clean(image: bytes | Image.Image, boxes: list[Box]) -> Perturbed:
    """The reference row: the original file untouched (a Pillow image: as PNG)."""
    return Perturbed(image if isinstance(image, bytes) else _png(upright(image)), list(boxes))


def mirrored(image: bytes | Image.Image, boxes: list[Box]) -> Perturbed:
    """Left-right mirror; x maps to width - x, so each box's edges swap."""
    pixels = upright(image)
    width = pixels.width
    return Perturbed(_png(ImageOps.mirror(pixels)), [(width - x1, y0, width - x0, y1) for x0, y0, x1, y1 in boxes])


def brightness(factor: float) -> Perturbation:
    """Every pixel times `factor` (Pillow's ImageEnhance.Brightness, clipped at 255): a dim fridge
    light (0.6) or an overexposed shot (1.4). Geometry unchanged."""

    def perturb(image: bytes | Image.Image, boxes: list[Box]) -> Perturbed:
        return Perturbed(_png(ImageEnhance.Brightness(upright(image)).enhance(factor)), list(boxes))

    return perturb


def jpeg(quality: int) -> Perturbation:
    """Re-encoded as a JPEG of `quality` (20: the blocky files of messaging apps). Geometry unchanged."""

    def perturb(image: bytes | Image.Image, boxes: list[Box]) -> Perturbed:
        out = io.BytesIO()
        upright(image).save(out, format="JPEG", quality=quality)
        return Perturbed(out.getvalue(), list(boxes))

    return perturb


def scaled(factor: float) -> Perturbation:
    """Resized by `factor` (Pillow bilinear, antialiased when shrinking), boxes scaled with each side's
    actual ratio (sides are rounded to whole pixels)."""

    def perturb(image: bytes | Image.Image, boxes: list[Box]) -> Perturbed:
        pixels = upright(image)
        size = (max(1, round(pixels.width * factor)), max(1, round(pixels.height * factor)))
        sx, sy = size[0] / pixels.width, size[1] / pixels.height
        resized = pixels.resize(size, Image.Resampling.BILINEAR)
        return Perturbed(_png(resized), [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in boxes])

    return perturb


#: Orientation tag -> the transpose that stores an upright image so that the tag restores it.
_STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # a phone held upright: stored on its side, "rotate 90 CW to show"
    8: Image.Transpose.ROTATE_270,
}


def exif_rotated(orientation: int = 6) -> Perturbation:
    """The pixels stored rotated with an EXIF orientation tag that puts them back, as phones write
    photos: a decoder that honours EXIF (the served one, helpers.runtime.preprocess) sees the original
    pixels and boxes; one that ignores it sees the image on its side."""

    def perturb(image: bytes | Image.Image, boxes: list[Box]) -> Perturbed:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        return Perturbed(_png(upright(image).transpose(_STORED[orientation]), exif), list(boxes))

    return perturb


#: The rows of the robustness table, clean first.
PERTURBATIONS: dict[str, Perturbation] = {
    "clean": clean,
    "mirrored": mirrored,
    "darker x0.6": brightness(0.6),
    "brighter x1.4": brightness(1.4),
    "jpeg quality 20": jpeg(20),
    "downscaled 0.5x": scaled(0.5),
    "upscaled 2x": scaled(2.0),
    "exif-rotated (6)": exif_rotated(6),
}


@dataclasses.dataclass(frozen=True)
class RobustnessRow:
    """One perturbation over the images: boxes found, detections that found none, and the ratios."""

    perturbation: str
    images: int
    boxes: int
    found: int
    false: int
    recall: float
    precision: float


@dataclasses.dataclass(frozen=True)
class EmptyImages:
    """Detections at the served threshold on images with no fridge object: every one is false."""

    images: int
    false: int
    per_image: Interval  # false detections per image, with its 95% bootstrap interval over images
    with_any: int  # images with at least one detection
    counts: tuple[int, ...]  # per image, in the records' order


@dataclasses.dataclass(frozen=True)
class RobustnessTable:
    threshold: float
    rows: tuple[RobustnessRow, ...]
    empty: EmptyImages | None

    def row(self, perturbation: str) -> RobustnessRow:
        return next(r for r in self.rows if r.perturbation == perturbation)

    def recall_drops(self) -> dict[str, float]:
        """Clean recall minus each perturbation's (the issue's target: <= 0.1 under every one)."""
        reference = self.row("clean").recall
        return {r.perturbation: reference - r.recall for r in self.rows if r.perturbation != "clean"}


def served(detector, threshold: float, max_detections: int = 100) -> Callable[[bytes], Detections]:
    """A helpers.runtime.model.Detector as the handler runs it: bytes -> decode_for_model (EXIF,
    DCT scaling) -> predict at `threshold`, boxes in the upright original's pixels."""

    def detect(data: bytes) -> Detections:
        decoded = decode_for_model(data, detector.config.image_size, pad_fill=detector.config.pad_fill)
        return detector.predict(decoded, threshold, max_detections).detections

    return detect


def perturbation_row(name, perturb, detect, records: list[Record], class_map: ClassMap, threshold) -> RobustnessRow:
    """Recall and precision at `threshold` over `records` perturbed by `perturb` (greedy matching at
    IoU 0.5, one box per detection: helpers.evaluate.metrics.found_boxes)."""
    boxes = found = kept = 0
    for record in records:
        perturbed = perturb(record.image_path.read_bytes(), record.boxes)
        detections = detect(perturbed.data).above(threshold)
        target = {
            "boxes": np.asarray(perturbed.boxes, np.float64).reshape(-1, 4),
            "labels": np.array([class_map.id(n) for n in record.labels], np.int64),
        }
        boxes, kept = boxes + len(record.boxes), kept + len(detections)
        found += found_boxes(detections, target, threshold)
    recall, precision = found / boxes if boxes else 1.0, found / kept if kept else 1.0
    return RobustnessRow(name, len(records), boxes, found, kept - found, recall, precision)


def empty_images(detect, records: list[Record], threshold: float, resamples: int = 1000, seed: int = 0) -> EmptyImages:
    """False detections per image at `threshold` on images with no box, with a bootstrap interval."""
    counts = np.array([len(detect(r.image_path.read_bytes()).above(threshold)) for r in records])
    means = resample_weights(len(counts), resamples, seed) @ counts / len(counts)
    low, high = np.percentile(means, [2.5, 97.5])
    interval = Interval(float(counts.mean()), float(low), float(high))
    return EmptyImages(len(counts), int(counts.sum()), interval, int((counts > 0).sum()), tuple(int(c) for c in counts))


def robustness(
    detect: Callable[[bytes], Detections],
    records: list[Record],
    class_map: ClassMap,
    threshold: float,
    empty: Sequence[Record] = (),
    perturbations: dict[str, Perturbation] = PERTURBATIONS,
) -> RobustnessTable:
    """The robustness table: a row per perturbation of `records` (the test images), and the false
    detections per image on `empty` (images with no fridge object) when given. `detect`: image bytes ->
    Detections, e.g. served(detector, threshold)."""
    rows = tuple(perturbation_row(n, p, detect, records, class_map, threshold) for n, p in perturbations.items())
    return RobustnessTable(threshold, rows, empty_images(detect, list(empty), threshold) if empty else None)


def format_table(table: RobustnessTable) -> str:
    """The table as Markdown, for the evaluation output."""
    lines = [
        f"| perturbation (threshold {table.threshold:.2f}) | boxes | found | false | recall | precision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in table.rows:
        lines.append(f"| {r.perturbation} | {r.boxes} | {r.found} | {r.false} | {r.recall:.3f} | {r.precision:.3f} |")
    if table.empty:
        e = table.empty
        lines.append(
            f"\nEmpty images: {e.false} false detections on {e.images} images ({e.with_any} with any): "
            f"{e.per_image.estimate:.3f} per image [{e.per_image.low:.3f}, {e.per_image.high:.3f}]"
        )
    return "\n".join(lines)
