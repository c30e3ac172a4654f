"""Benchmarks, measured side by side in one run; `python -m helpers.benchmark` writes BENCHMARKS.md.

Ratios are taken between measurements made in the same process, interleaved, on the same inputs, so a
noisy host moves both sides. Nothing here is a test: it prints figures and states the goals.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import blog
from helpers.config import PREPROCESS
from helpers.runtime.preprocess import decode_image, preprocess
from helpers.timing import measure


def preprocessing_comparison(image: np.ndarray, repeats: int = 30) -> dict[str, dict]:
    """decoded RGB -> model input, three ways: ours (NumPy), albumentations 2.0.8, the blog's float64."""
    from helpers.transforms import valid_transform

    albu = valid_transform(PREPROCESS)
    pil = Image.fromarray(image)

    def albumentations_path():
        out = albu(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"]
        return np.ascontiguousarray(out.transpose(2, 0, 1))[None]

    results = {
        "ours": measure(lambda: preprocess(image), repeats),
        "albumentations": measure(albumentations_path, repeats),
        "blog": measure(lambda: blog.preprocess(pil), repeats),
    }
    return results


def synthetic_photo(megapixels: float, seed: int = 0) -> bytes:
    """A JPEG of about `megapixels` made by tiling a real sample image (4:3 landscape)."""
    from helpers.data import SAMPLE_DIR

    source = Image.open(SAMPLE_DIR / "images" / "10.jpg").convert("RGB")
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    canvas = Image.new("RGB", (width, height))
    for x in range(0, width, source.width):
        for y in range(0, height, source.height):
            canvas.paste(source, (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
