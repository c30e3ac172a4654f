"""SYNTHETIC detection images: real Fridge object photos pasted onto generated backgrounds.

Offline there are only 6 real annotated images. The 134 real object photos in
data/fridge-classification-small150 (one object each, same 4 classes, a hand-drawn box each in
boxes.csv) are pasted onto varied backgrounds; each composite's box is the object's own box, carried
through the paste, never the pasted photo's (the object covers a median 18% of its photo). Every file
is named `synthetic_*` and every XML says so in <database>, so this set is never mistaken for real data.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from helpers.data.dataset import object_photos
from helpers.data.formats.voc import parse_voc, voc_xml
from helpers.data.records import Record

SYNTHETIC_TAG = "SYNTHETIC (helpers.data.synthetic: real thumbnails on generated backgrounds)"
SYNTHETIC_PREFIX = "synthetic_"  # every composite's file name starts with it


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    """A gradient between two random colours, with noise, random shapes and a blur."""
    np_rng = np.random.default_rng(rng.getrandbits(32))
    c0, c1 = np_rng.uniform(0, 255, 3), np_rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, height if rng.random() < 0.5 else width)
    ramp = c0 + (c1 - c0) * t[:, None]
    grid = ramp[:, None, :] if len(t) == height else ramp[None, :, :]
    pixels = np.broadcast_to(grid, (height, width, 3)) + np_rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 6)):
        x, y = rng.randrange(width), rng.randrange(height)
        w, h = rng.randint(10, width // 2), rng.randint(10, height // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x, y, x + w, y + h), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2)))


def _cut(photo: Record, margin: float | None) -> tuple[tuple[int, int, int, int], tuple[float, ...]]:
    """-> (the crop of the photo to paste, the object's box inside that crop). margin None pastes the
    whole photo; a number pastes the object with that fraction of its width/height around it (less
    where the photo ends)."""
    x1, y1, x2, y2 = photo.boxes[0]
    if margin is None:
        crop = (0, 0, photo.width, photo.height)
    else:
        mx, my = margin * (x2 - x1), margin * (y2 - y1)
        crop = (
            max(0, int(x1 - mx)),
            max(0, int(y1 - my)),
            min(photo.width, int(np.ceil(x2 + mx))),
            min(photo.height, int(np.ceil(y2 + my))),
        )
    return crop, (x1 - crop[0], y1 - crop[1], x2 - crop[0], y2 - crop[1])


def make_synthetic_voc(
    out_dir: Path,
    n_images: int,
    seed: int = 0,
    photos: list[Record] | None = None,
    objects_per_image: tuple[int, int] = (1, 3),
    sizes: tuple[tuple[int, int], ...] = ((499, 666), (666, 499), (384, 384), (640, 480)),
    margin: float | None = 0.15,
    object_scale: tuple[float, float] = (0.35, 0.75),
) -> list[Record]:
    """Write `n_images` VOC images (`objects_per_image` objects each, at most 30% overlap; fewer when
    they do not fit) and return their records.

    Objects come from `photos` (records with the object's box; default: every object photo), cut with
    `margin` (see _cut) and scaled so the object's longer side is `object_scale` of the image's shorter
    side (the real fridge objects' range). Image sizes are drawn from `sizes` (width, height): the real
    photos are 499x666 portrait, so the letterbox and its padding are exercised as in serving. Earlier
    synthetic files in `out_dir` are removed first: a re-run with fewer images must not leave stale
    ones for the parser to pick up.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    for stale in [
        *(out_dir / "images").glob(f"{SYNTHETIC_PREFIX}*.jpg"),
        *(out_dir / "annotations").glob(f"{SYNTHETIC_PREFIX}*.xml"),
    ]:
        stale.unlink()
    rng = random.Random(seed)
    objects = photos if photos is not None else object_photos()
    if not objects:
        raise ValueError("no object photos to paste")
    for index in range(n_images):
        width, height = rng.choice(sizes)
        image = _background(rng, width, height)
        boxes, labels, pasted, pasted_from = [], [], [], []
        for _ in range(rng.randint(*objects_per_image)):
            photo = rng.choice(objects)
            box = _placed(rng, photo, image, margin, object_scale, pasted)
            if box is not None:
                boxes.append(box)
                labels.append(photo.labels[0])
                pasted_from.append(photo.image_path.name)
        name = f"{SYNTHETIC_PREFIX}{index:04d}.jpg"
        image.save(out_dir / "images" / name, quality=90)
        # Each <object> names its source photo: a test proves no hold-out photo is in a training composite.
        xml = voc_xml(name, width, height, boxes, labels, database=SYNTHETIC_TAG, photos=pasted_from)
        (out_dir / "annotations" / f"{SYNTHETIC_PREFIX}{index:04d}.xml").write_text(xml)
    return parse_voc(out_dir / "annotations", out_dir / "images")


def _placed(rng: random.Random, photo: Record, image: Image.Image, margin, object_scale, pasted: list):
    """Paste the object of `photo` (cut, maybe mirrored, scaled) where it overlaps every crop in
    `pasted` by less than 30%, appending its crop there -> the object's box in the image, or None when
    20 tries found no such place."""
    width, height = image.size
    crop, (ox1, oy1, ox2, oy2) = _cut(photo, margin)
    with Image.open(photo.image_path) as source:
        obj = source.convert("RGB").crop(crop)
    if rng.random() < 0.5:
        obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ox1, ox2 = obj.width - ox2, obj.width - ox1
    scale = rng.uniform(*object_scale) * min(width, height) / max(ox2 - ox1, oy2 - oy1)
    scale = min(scale, width / obj.width, height / obj.height)  # the crop must fit the image
    obj = obj.resize((max(8, round(obj.width * scale)), max(8, round(obj.height * scale))))
    sx, sy = obj.width / (crop[2] - crop[0]), obj.height / (crop[3] - crop[1])
    for _attempt in range(20):
        x = rng.randint(0, width - obj.width)
        y = rng.randint(0, height - obj.height)
        # Overlap is judged on the pasted crops: a later paste hides the earlier crop's pixels.
        if all(_overlap((x, y, x + obj.width, y + obj.height), other) < 0.3 for other in pasted):
            image.paste(obj, (x, y))
            pasted.append((x, y, x + obj.width, y + obj.height))
            box = (x + ox1 * sx, y + oy1 * sy, min(x + ox2 * sx, width), min(y + oy2 * sy, height))
            return tuple(round(v, 1) for v in box)
    return None


def is_synthetic(record: Record) -> bool:
    """Whether a record is one of the composites make_synthetic_voc writes (all named synthetic_*)."""
    return record.image_path.name.startswith(SYNTHETIC_PREFIX)


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area (pasting hides the earlier object)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def source_photos(out_dir: Path) -> set[str]:
    """The file names of the object photos pasted into the composites in `out_dir`."""
    return {
        node.text
        for xml in Path(out_dir).glob(f"annotations/{SYNTHETIC_PREFIX}*.xml")
        for node in ET.parse(xml).getroot().iter("photo")
    }
