"""Real images with no fridge object: crops of the bundled fridge photos away from every box.

A served detector first meets photos with nothing it knows in them; false detections per image on
such photos is the figure (issue 38). The project ships no such photos, so they are cut from the real
fridge photos: the striped cloth, the shelf and the reflections around the objects, the very scene the
objects stand in, which is where a detector is most tempted.

Choices (the defaults):
* MIN_SIDE 96 px: about the smallest object in these photos (the cans are ~101 px wide), so every crop
  is a region an object could fill, and the letterbox enlarges none of them more than 4x (below that
  a crop is a blur of cloth, not a scene).
* MAX_ASPECT 2: photo-like shapes; a 499 x 100 strip would be mostly letterbox padding for the model.
* MARGIN 8 px clear of every box: hand-drawn boxes can sit a few pixels inside an object's edge.
* Crops are disjoint (no pixel in two crops), largest first: each counts as its own image.
The 113 x 150 object photos give none: the object is centred, with a median 38 px free on each side.
Crops are written as PNG, so their pixels are exactly the photo's (no second JPEG loss).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from helpers.data.dataset import load_sample
from helpers.data.records import Record

MIN_SIDE = 96
MAX_ASPECT = 2.0
MARGIN = 8
#: Grid of the crops' corners and sides, in pixels: fine enough to fill the free space, coarse enough
#: that a photo's candidates (~1M) are one vectorised pass.
STEP = 16


@dataclasses.dataclass(frozen=True)
class EmptyCrop:
    """A region of `source` (xyxy pixels of its upright image) that no box comes near."""

    source: Record
    box: tuple[int, int, int, int]

    @property
    def name(self) -> str:
        return f"{self.source.image_path.stem}_empty_{'_'.join(map(str, self.box))}.png"

    def image(self) -> Image.Image:
        """The crop's pixels, from the source decoded upright (EXIF orientation, as the boxes are)."""
        with Image.open(self.source.image_path) as image:
            return ImageOps.exif_transpose(image).convert("RGB").crop(self.box)


def free_windows(
    width: int,
    height: int,
    boxes,
    min_side: int = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
    margin: int = MARGIN,
    step: int = STEP,
) -> np.ndarray:
    """Every window [N, 4] (xyxy, corners and sides on the `step` grid) inside the image, with both sides
    >= min_side and at most max_aspect, that keeps `margin` pixels clear of every box."""
    starts_x, starts_y = np.arange(0, width - min_side + 1, step), np.arange(0, height - min_side + 1, step)
    sides_w, sides_h = np.arange(min_side, width + 1, step), np.arange(min_side, height + 1, step)
    x0, y0, w, h = (a.ravel() for a in np.meshgrid(starts_x, starts_y, sides_w, sides_h, indexing="ij"))
    keep = (x0 + w <= width) & (y0 + h <= height) & (np.maximum(w, h) <= max_aspect * np.minimum(w, h))
    windows = np.stack([x0, y0, x0 + w, y0 + h], axis=1)[keep]
    for bx0, by0, bx1, by1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        apart = (
            (windows[:, 2] <= bx0 - margin)
            | (windows[:, 0] >= bx1 + margin)
            | (windows[:, 3] <= by0 - margin)
            | (windows[:, 1] >= by1 + margin)
        )
        windows = windows[apart]
    return windows


def largest_disjoint(windows: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Greedy: the largest window (ties: top, then left, then wider), then the largest that shares no
    pixel with those taken, and so on. Deterministic: a total order, no randomness."""
    area = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
    order = np.lexsort((-(windows[:, 2] - windows[:, 0]), windows[:, 0], windows[:, 1], -area))
    windows, chosen = windows[order], []
    while len(windows):
        x0, y0, x1, y1 = (int(v) for v in windows[0])
        chosen.append((x0, y0, x1, y1))
        apart = (windows[:, 2] <= x0) | (windows[:, 0] >= x1) | (windows[:, 3] <= y0) | (windows[:, 1] >= y1)
        windows = windows[apart]
    return chosen


def empty_crops(records: list[Record], **limits) -> list[EmptyCrop]:
    """The disjoint box-free crops of each record (in the records' order, largest first within one);
    `limits`: free_windows' min_side, max_aspect, margin, step. Pass the test photos only to keep the
    empty images as unseen as the test images."""
    crops = []
    for record in records:
        windows = free_windows(record.width, record.height, record.boxes, **limits)
        crops += [EmptyCrop(record, box) for box in largest_disjoint(windows)]
    return crops


def write_crops(crops: list[EmptyCrop], folder: str | Path) -> list[Record]:
    """Each crop as `folder`/<source stem>_empty_<x0>_<y0>_<x1>_<y1>.png -> records with no boxes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for crop in crops:
        path = folder / crop.name
        image = crop.image()
        image.save(path, format="PNG")
        records.append(Record(path, image.width, image.height, [], []))
    return records


def empty_records(folder: str | Path, records: list[Record] | None = None) -> list[Record]:
    """The empty images of `records` (default: the 6 bundled fridge photos) written to `folder`."""
    return write_crops(empty_crops(load_sample() if records is None else records), folder)
