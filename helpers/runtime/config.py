"""The one train/serve contract (image size, normalisation, padding, interpolation, classes) and
the serving limits.

Training builds its albumentations pipeline from `PREPROCESS`; the Lambda runtime letterboxes with
the same object (or with the copy stored in the ONNX model's metadata). Stdlib only: it is part of
helpers.runtime, the folder the Lambda zip ships.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

#: The Fridge Objects classes in IceVision's order of first appearance, so that label ids match the
#: blog post's class_map.json ({"background": 0, "carton": 1, ...}).
FRIDGE_CLASSES: tuple[str, ...] = ("carton", "milk_bottle", "water_bottle", "can")

# Serving defaults and limits: the handler's environment variables default to these, and the
# decoder refuses larger images by default (each is overridable; see helpers.runtime.handler).
DEFAULT_SCORE_THRESHOLD = 0.5  # what a response holds unless SCORE_THRESHOLD or the request say otherwise
DEFAULT_MAX_DETECTIONS = 100
MAX_DETECTIONS_LIMIT = 10_000  # the largest MAX_DETECTIONS / "max_detections" accepted
MAX_IMAGE_PIXELS = 40_000_000  # decompression-bomb guard: ~160 MB of RGB before any resize
MAX_IMAGE_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit
S3_IMAGE_BYTES_FACTOR = 10  # images by S3 reference skip the payload limit, so may be this much larger
#: File suffixes of the image formats the handler decodes (batch lists a folder's images by them).
SERVED_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """IceVision's `resize_and_pad(size)` + `Normalize()` as parameters.

    `pad_fill` is IceVision's pad colour; albumentations 2.x silently ignores the 1.x argument name
    `value=`, so the fill is passed as `fill=` (see helpers.train.transforms).
    """

    image_size: int = 384
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_pixel_value: float = 255.0
    pad_fill: tuple[int, int, int] = (124, 116, 104)
    interpolation: str = "linear"  # cv2.INTER_LINEAR, the LongestMaxSize default

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessConfig:
        raw: dict[str, Any] = json.loads(text)
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        for key in ("mean", "std", "pad_fill"):
            if key in raw:
                raw[key] = tuple(raw[key])
        return cls(**raw)


PREPROCESS = PreprocessConfig()
