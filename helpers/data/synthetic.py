"""SYNTHETIC detection images: real Fridge object photos pasted onto generated backgrounds.

Offline there are only 6 real annotated images. The 134 real thumbnails in
data/fridge-classification-small150 (one object each, same 4 classes) become objects with known
boxes on varied backgrounds. Every file is named `synthetic_*` and every XML says so in <database>,
so this set is never mistaken for real data; the real images stay the honest test.
"""

from __future__ import annotations

import random
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from helpers.data.dataset import Record, parse_voc
from helpers.paths import THUMBNAILS_DIR
from helpers.runtime.config import FRIDGE_CLASSES

SYNTHETIC_TAG = "SYNTHETIC (helpers.data.synthetic: real thumbnails on generated backgrounds)"
SYNTHETIC_PREFIX = "synthetic_"  # every composite's file name starts with it


def object_photos(folder: Path = THUMBNAILS_DIR) -> list[tuple[Path, str]]:
    """The (path, label) object photos in `folder`, named `<class>_<n>.jpg`, sorted by name."""
    items = []
    for path in sorted(folder.glob("*.jpg")):
        label = path.stem.rsplit("_", 1)[0]
        if label in FRIDGE_CLASSES:
            items.append((path, label))
    if not items:
        raise FileNotFoundError(f"no <class>_<n>.jpg thumbnails in {folder}")
    return items


def split_object_photos(
    photos: list[tuple[Path, str]], holdout_fraction: float = 0.2, seed: int = 0
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """-> (training photos, hold-out photos), a seeded split within each class, so the synthetic
    hold-out shows objects the model never saw in a training composite (not just new layouts)."""
    training, holdout = [], []
    for label in FRIDGE_CLASSES:
        of_class = [item for item in photos if item[1] == label]
        random.Random(f"{seed}-{label}").shuffle(of_class)
        n_holdout = round(len(of_class) * holdout_fraction)
        holdout += of_class[:n_holdout]
        training += of_class[n_holdout:]
    return sorted(training), sorted(holdout)


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


def _voc_xml(filename: str, width: int, height: int, boxes, labels) -> str:
    objects = "".join(
        f"<object><name>{escape(label)}</name><difficult>0</difficult><bndbox>"
        f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for (x1, y1, x2, y2), label in zip(boxes, labels)
    )
    return (
        f"<annotation><folder>images</folder><filename>{escape(filename)}</filename>"
        f"<source><database>{escape(SYNTHETIC_TAG)}</database></source>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objects}</annotation>\n"
    )


def make_synthetic_voc(
    out_dir: Path,
    n_images: int,
    seed: int = 0,
    photos: list[tuple[Path, str]] | None = None,
    objects_per_image: tuple[int, int] = (1, 3),
    sizes: tuple[tuple[int, int], ...] = ((499, 666), (666, 499), (384, 384), (640, 480)),
) -> list[Record]:
    """Write `n_images` VOC images (`objects_per_image` objects each, at most 30% overlap; fewer when
    they do not fit) and return their records.

    Objects are drawn from `photos` (default: every photo in data/fridge-classification-small150).
    Image sizes are drawn from `sizes` (width, height): the real photos are 499x666 portrait, so the
    letterbox and its padding are exercised as in serving. Earlier synthetic files in `out_dir` are
    removed first: a re-run with fewer images must not leave stale ones for the parser to pick up.
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
    thumbs = photos if photos is not None else object_photos()
    if not thumbs:
        raise ValueError("no object photos to paste")
    for index in range(n_images):
        width, height = rng.choice(sizes)
        image = _background(rng, width, height)
        boxes: list[tuple[int, int, int, int]] = []
        labels: list[str] = []
        for _ in range(rng.randint(*objects_per_image)):
            path, label = rng.choice(thumbs)
            with Image.open(path) as thumb:
                obj = thumb.convert("RGB")
            if rng.random() < 0.5:
                obj = obj.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            scale = rng.uniform(0.35, 0.75) * min(width, height) / max(obj.size)
            obj = obj.resize((max(8, round(obj.width * scale)), max(8, round(obj.height * scale))))
            for _attempt in range(20):
                x = rng.randint(0, width - obj.width)
                y = rng.randint(0, height - obj.height)
                box = (x, y, x + obj.width, y + obj.height)
                if all(_overlap(box, other) < 0.3 for other in boxes):
                    image.paste(obj, (x, y))
                    boxes.append(box)
                    labels.append(label)
                    break
        name = f"{SYNTHETIC_PREFIX}{index:04d}.jpg"
        image.save(out_dir / "images" / name, quality=90)
        xml = _voc_xml(name, width, height, boxes, labels)
        (out_dir / "annotations" / f"{SYNTHETIC_PREFIX}{index:04d}.xml").write_text(xml)
    return parse_voc(out_dir / "annotations", out_dir / "images")


def is_synthetic(record: Record) -> bool:
    """Whether a record is one of the composites make_synthetic_voc writes (all named synthetic_*)."""
    return record.image_path.name.startswith(SYNTHETIC_PREFIX)


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area (pasting hides the earlier object)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller
