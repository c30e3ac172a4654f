"""The compiled letterbox_kernel.c beside this file: its ABI, its loading, and the one call into it.

helpers.build.native builds it (the zip gets a build for its architecture); where it is absent,
helpers.runtime.preprocess runs the same arithmetic in NumPy.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from helpers.runtime.geometry import Letterbox
from helpers.runtime.resize import linear_taps

#: The compiled letterbox_kernel.c (helpers.build.native builds it; absent: the NumPy path).
KERNEL_PATH = Path(__file__).with_name("_letterbox_kernel.so")


def _array(dtype, ndim: int = 1, flags: str = "C_CONTIGUOUS"):
    """A ctypes argument type that accepts only NumPy arrays of this dtype, ndim and flags."""
    return np.ctypeslib.ndpointer(dtype=dtype, ndim=ndim, flags=flags)


#: helpers_letterbox's parameters (letterbox_kernel.c): a wrong array is a TypeError here, not a bad read.
_ARGTYPES = [
    np.ctypeslib.ndpointer(dtype=np.uint8, ndim=3),  # the pixels, any strides: passed as the byte steps below
    ctypes.c_int64,  # row step
    ctypes.c_int64,  # channel step
    *[_array(np.int64)] * 2,  # horizontal taps' byte offsets in a row
    *[_array(np.int32)] * 6,  # wx0, wx1, y0, y1, wy0, wy1
    *[ctypes.c_int] * 5,  # new_height, new_width, size, top, left
    *[_array(np.float32)] * 3,  # mean, denominator, pad
    _array(np.int16, flags="C_CONTIGUOUS, WRITEABLE"),  # scratch
    _array(np.float32, ndim=4, flags="C_CONTIGUOUS, WRITEABLE"),  # the tensor
]


@functools.cache
def load_kernel():
    """helpers_letterbox from the compiled letterbox_kernel.c next to this file, or None when it was
    not built (preprocess then runs in NumPy). A library that is there but does not load (built for
    another architecture) raises: that is a packaging error, not a reason to serve more slowly."""
    if not KERNEL_PATH.exists():
        return None
    try:
        function = ctypes.CDLL(str(KERNEL_PATH)).helpers_letterbox
    except (OSError, AttributeError) as err:
        raise OSError(
            f"letterbox kernel {KERNEL_PATH.name} does not load ({err}): rebuild the zip with helpers.build.package"
        ) from None
    function.argtypes = _ARGTYPES
    function.restype = None
    return function


@functools.lru_cache(maxsize=64)
def _byte_offsets(src: int, dst: int, pixel_step: int) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal taps as 64-bit byte offsets from a row's first pixel, for the kernel: any pixel
    step (3 bytes from NumPy, 4 from Pillow's memory, negative for a flip, a row's for a transpose)."""
    x0, x1, _, _ = linear_taps(src, dst, clamp_weights=True)
    offsets = x0.astype(np.int64) * pixel_step, x1.astype(np.int64) * pixel_step
    for table in offsets:
        table.flags.writeable = False
    return offsets


def letterbox_native(function, pixels: np.ndarray, geometry: Letterbox, tensor: np.ndarray, normalise) -> None:
    """Resize + pad + Normalize in C into `tensor`, on this thread (at the model's input size one
    thread is faster than two: docs/decisions.md).

    The kernel reads pixel (y, x) channel c at data + y * row step + x * pixel step + c * channel step,
    the array's own strides, so flipped, transposed, RGBX and broadcast grey views are read in place;
    the tap tables come from the array's own shape, so every read is inside it."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, not {pixels.dtype} {pixels.shape}")
    size = tensor.shape[-1]
    if tensor.shape != (1, 3, size, size) or not (
        0 <= geometry.pad_top <= size - geometry.new_height and 0 <= geometry.pad_left <= size - geometry.new_width
    ):
        raise ValueError(f"the letterbox {geometry} does not fit a {tensor.shape} tensor")
    height, width, _ = pixels.shape
    row_step, pixel_step, channel_step = pixels.strides
    new_height, new_width = geometry.new_height, geometry.new_width
    _, _, wx0, wx1 = linear_taps(width, new_width, clamp_weights=True)
    rows = linear_taps(height, new_height, clamp_weights=False)
    tables = (*_byte_offsets(width, new_width, pixel_step), wx0, wx1, *rows)
    scratch = np.empty(6 * new_width, np.int16)
    function(
        pixels, row_step, channel_step, *tables, new_height, new_width, size,
        geometry.pad_top, geometry.pad_left, *normalise, scratch, tensor,
    )  # fmt: skip
