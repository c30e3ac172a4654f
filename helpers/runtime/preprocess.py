"""Serving-side preprocessing, bit-exact to the albumentations valid transform used in training
(LongestMaxSize -> PadIfNeeded(center) -> Normalize on OpenCV), which the Lambda does not have.

Decoding is helpers.runtime.decode, the resize helpers.runtime.resize (OpenCV's INTER_LINEAR),
the geometry helpers.runtime.geometry. preprocess() runs resize, pad and Normalize fused in
letterbox_kernel.c when that is built (helpers.runtime.kernel), in NumPy otherwise: the same numbers.
tests/test_preprocess.py checks max abs difference 0 against albumentations on every bundled image and
on random sizes, for both paths.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from helpers.runtime import kernel
from helpers.runtime.config import PREPROCESS, PreprocessConfig
from helpers.runtime.decode import Decoded
from helpers.runtime.geometry import Letterbox, letterbox_geometry
from helpers.runtime.resize import resize_linear


def _placement(image: np.ndarray | Decoded, config: PreprocessConfig) -> tuple[np.ndarray, Letterbox]:
    """The pixels to resize and where LongestMaxSize + PadIfNeeded put them (from config), with the
    Letterbox measured in the original image."""
    if config.interpolation != "linear":
        raise ValueError(f"only 'linear' interpolation is implemented, not {config.interpolation!r}")
    pixels = image.pixels if isinstance(image, Decoded) else image
    geometry = letterbox_geometry(pixels.shape[0], pixels.shape[1], config.image_size)
    if isinstance(image, Decoded):
        geometry = dataclasses.replace(
            geometry, orig_height=image.height, orig_width=image.width, reduction=image.reduction
        )
    return pixels, geometry


def letterbox(image: np.ndarray | Decoded, config: PreprocessConfig = PREPROCESS):
    """RGB uint8 (H, W, 3) or Decoded -> (size x size x 3 uint8 padded with config.pad_fill, Letterbox)."""
    pixels, geometry = _placement(image, config)
    resized = resize_linear(pixels, geometry.new_height, geometry.new_width)
    size = config.image_size
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[...] = np.asarray(config.pad_fill, dtype=np.uint8)
    top, left = geometry.pad_top, geometry.pad_left
    canvas[top : top + geometry.new_height, left : left + geometry.new_width] = resized
    return canvas, geometry


def normalization(config: PreprocessConfig = PREPROCESS) -> tuple[np.ndarray, np.ndarray]:
    """(mean * max_pixel_value, 1 / (std * max_pixel_value)) in float32, as albumentations computes
    them; (pixel - mean) * denominator in float32 then equals its uint8 lookup table exactly."""
    mean = np.asarray(config.mean, dtype=np.float32) * np.float32(config.max_pixel_value)
    denominator = np.reciprocal(np.asarray(config.std, dtype=np.float32) * np.float32(config.max_pixel_value))
    return mean, denominator


def normalisation_constants(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, denominator, the pad colour normalised), float32 per channel."""
    mean, denominator = normalization(config)
    pad = (np.asarray(config.pad_fill, dtype=np.uint8).astype(np.float32) - mean) * denominator
    return mean, denominator, pad


def preprocess(image: np.ndarray | Decoded, config: PreprocessConfig = PREPROCESS):
    """RGB uint8 image or Decoded -> (model input float32 1x3xSxS, Letterbox).

    Equal to letterbox() followed by albumentations Normalize and HWC->CHW, in one pass of
    letterbox_kernel.c when it is built, else preprocess_numpy(): same numbers."""
    function = kernel.load_kernel()
    if function is None:
        return preprocess_numpy(image, config)
    pixels, geometry = _placement(image, config)
    tensor = np.empty((1, 3, config.image_size, config.image_size), dtype=np.float32)
    kernel.letterbox_native(function, pixels, geometry, tensor, normalisation_constants(config))
    return tensor, geometry


def preprocess_numpy(image: np.ndarray | Decoded, config: PreprocessConfig = PREPROCESS):
    """preprocess() in NumPy, for where the kernel is not built: resize_linear, then Normalize on the
    resized region only, the padding filled with the normalised pad colour (it is constant)."""
    pixels, geometry = _placement(image, config)
    resized = resize_linear(pixels, geometry.new_height, geometry.new_width)
    mean, denominator, pad = normalisation_constants(config)
    tensor = np.empty((1, 3, config.image_size, config.image_size), dtype=np.float32)
    top, left = geometry.pad_top, geometry.pad_left
    bottom, right = top + geometry.new_height, left + geometry.new_width
    for c in range(3):
        plane = tensor[0, c]
        plane[:top], plane[bottom:], plane[:, :left], plane[:, right:] = pad[c], pad[c], pad[c], pad[c]
        region = plane[top:bottom, left:right]
        np.subtract(resized[:, :, c], mean[c], out=region, dtype=np.float32)
        region *= denominator[c]
    return tensor, geometry
