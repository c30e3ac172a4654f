"""What every dataset reader produces: one Record per image, and AnnotationError for data that cannot
become one. Imports nothing else of helpers.data, so parsers and the dataset layer can share it."""

from __future__ import annotations

import dataclasses
from pathlib import Path


class AnnotationError(ValueError):
    """An annotation file that cannot become a record; the message names the file."""


@dataclasses.dataclass
class Record:
    image_path: Path
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]  # xyxy, pixels
    labels: list[str]
