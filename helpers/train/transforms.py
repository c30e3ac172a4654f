"""albumentations pipelines equivalent to IceVision's `aug_tfms` / `resize_and_pad`, built from config.

Differences from IceVision 0.12 (albumentations 1.0.3), each because albumentations 2.0.8 changed:
* PadIfNeeded takes `fill=` (the 1.x `value=` is silently ignored in 2.x and would pad with black);
* ShiftScaleRotate(rotate_limit=15) is deprecated: Affine with the same ranges replaces it;
* Blur(blur_limit=(1, 3)) must be odd and >= 3 in 2.x: (3, 3).
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np

from helpers.runtime.config import PREPROCESS, PreprocessConfig

_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR}
BBOX_PARAMS = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.1)


def resize_and_pad(config: PreprocessConfig = PREPROCESS) -> list:
    size = config.image_size
    return [
        A.LongestMaxSize(max_size=size, interpolation=_INTERPOLATIONS[config.interpolation]),
        A.PadIfNeeded(
            min_height=size,
            min_width=size,
            position="center",
            border_mode=cv2.BORDER_CONSTANT,
            fill=config.pad_fill,
        ),
    ]


def normalize(config: PreprocessConfig = PREPROCESS) -> A.Normalize:
    return A.Normalize(mean=config.mean, std=config.std, max_pixel_value=config.max_pixel_value)


def valid_transform(config: PreprocessConfig = PREPROCESS, with_normalize: bool = True) -> A.Compose:
    """IceVision `resize_and_pad(size)` + `Normalize()`: the transform serving must reproduce."""
    steps = resize_and_pad(config) + ([normalize(config)] if with_normalize else [])
    return A.Compose(steps, bbox_params=BBOX_PARAMS)


def train_transform(
    config: PreprocessConfig = PREPROCESS,
    presize: int = 512,
    with_normalize: bool = True,
    min_scale: float = 1.0,
    seed: int | None = None,
) -> A.Compose:
    """IceVision `aug_tfms(size, presize)` + `Normalize()`.

    seed: albumentations 2.x draws from the Compose's own generators, which global seeds (torch,
    NumPy, Lightning's seed_everything) do not reach; unseeded, no two trainings see the same images.
    Seeded through `reseed`, not Compose(seed=...): see there.

    min_scale < 1 adds scale jitter: the letterbox branch draws its longest side from [min_scale, 1]
    x size (in 32 px steps) and pads at a random place, so that objects of the 113x150 object photos,
    which fill more of the letterbox than the fridge photos' objects, are also seen at fridge scale."""
    size = config.image_size
    sides = list(range(size, int(min_scale * size) - 1, -32)) if min_scale < 1 else [size]
    steps = [
        A.SmallestMaxSize(max_size=presize),
        A.HorizontalFlip(),
        A.Affine(
            scale=(0.9, 1.1),
            translate_percent=(-0.0625, 0.0625),
            rotate=(-15, 15),
            border_mode=cv2.BORDER_REFLECT_101,
            p=0.5,
        ),
        A.RGBShift(r_shift_limit=10, g_shift_limit=10, b_shift_limit=10),
        A.RandomBrightnessContrast(),
        A.Blur(blur_limit=(3, 3)),
        A.OneOrOther(
            A.RandomSizedBBoxSafeCrop(height=size, width=size),
            A.LongestMaxSize(max_size=sides if len(sides) > 1 else size),
            p=0.5,
        ),
        A.PadIfNeeded(
            min_height=size,
            min_width=size,
            position="random" if len(sides) > 1 else "center",
            border_mode=cv2.BORDER_CONSTANT,
            fill=config.pad_fill,
        ),
    ]
    if with_normalize:
        steps.append(normalize(config))
    return reseed(A.Compose(steps, bbox_params=BBOX_PARAMS), seed)


def reseed(pipeline: A.Compose, seed: int | None) -> A.Compose:
    """Seed every transform of `pipeline` from one shared pair of generators, so that each draws the
    next numbers of one stream. albumentations 2.0.8's Compose(seed=s) and set_random_seed(s) give each
    transform its own generators seeded with the same s: transforms that draw alike then draw the same
    numbers, and with p=0.5 HorizontalFlip, RGBShift and Blur were applied always together, and no
    augmentation at all to 16% of the images instead of 1/32 (tests/test_train.py)."""
    if seed is not None:
        pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline
