"""cv2.resize INTER_LINEAR for uint8 images in NumPy, bit for bit.

The Lambda has no OpenCV, and Pillow's resize is not OpenCV's (Pillow antialiases when shrinking), so
this module computes exactly what OpenCV does:

* source coordinate per output pixel: (d + 0.5) * scale - 0.5 in float32, scale = 1 / (dst / src);
* x weights clamped at the borders, y weights NOT clamped (rows are clamped instead), both stored as
  round(w * 2048) (11-bit fixed point);
* horizontal pass in int32; vertical pass as OpenCV's SIMD kernel does it:
  ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16), then (v + 2) >> 2.
  (An exact 2x shrink is INTER_AREA in OpenCV; for 2x it gives the same numbers.)
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from helpers.runtime.cpus import available_cpus

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


@functools.lru_cache(maxsize=64)
def linear_taps(src: int, dst: int, clamp_weights: bool):
    """OpenCV's resize tables for one axis: two source indices and 11-bit weights per output index
    (int32, read-only; cached because a service sees the same few sizes again and again)."""
    scale = 1.0 / (dst / src)
    position = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    index = np.floor(position).astype(np.int64)
    frac = position - index.astype(np.float32)
    if clamp_weights:
        below, above = index < 0, index >= src - 1
        frac[below | above] = 0
        index[below] = 0
        index[above] = src - 1
    w0 = np.rint((np.float32(1) - frac) * np.float32(_COEF_SCALE)).astype(np.int32)
    w1 = np.rint(frac * np.float32(_COEF_SCALE)).astype(np.int32)
    taps = np.clip(index, 0, src - 1).astype(np.int32), np.clip(index + 1, 0, src - 1).astype(np.int32), w0, w1
    for table in taps:
        table.flags.writeable = False
    return taps


def _workers() -> int:
    """At most 2: Lambda's memory sizes that matter here give 2 vCPUs."""
    return max(1, min(2, available_cpus()))


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="resize")
    return _POOL


def _split_rows(work, rows: int) -> list:
    """[work(lo, hi) for bands of output rows], the bands shared between the CPUs this process may
    use: this thread takes the first, the pool the rest (NumPy releases the GIL in these loops)."""
    workers = _workers() if rows >= 64 else 1
    bounds = np.linspace(0, rows, workers + 1).astype(int).tolist()
    others = [_pool().submit(work, lo, hi) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    return [work(bounds[0], bounds[1]), *(future.result() for future in others)]


def resize_linear(image: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    """cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR) for uint8 HxWxC.

    Output rows are split between the CPUs this process may use; the split changes no arithmetic."""
    height, width, channels = image.shape
    if (new_height, new_width) == (height, width):
        return image
    x0, x1, wx0, wx1 = linear_taps(width, new_width, clamp_weights=True)
    y0, y1, wy0, wy1 = linear_taps(height, new_height, clamp_weights=False)
    # Work on (rows, width * channels) so every gather is a plain 2-D column take.
    lanes = np.arange(channels)
    columns = ((x0[:, None] * channels + lanes).ravel(), (x1[:, None] * channels + lanes).ravel())
    weights = (np.repeat(wx0, channels), np.repeat(wx1, channels))
    flat = image.reshape(height, width * channels)

    def rows(lo: int, hi: int) -> np.ndarray:
        # Horizontal pass only on the source rows these output rows read: cost follows the output.
        needed, row_of = np.unique(np.concatenate([y0[lo:hi], y1[lo:hi]]), return_inverse=True)
        picked = flat[needed]
        horizontal = picked[:, columns[0]] * weights[0]  # uint8 * int32 -> int32
        horizontal += picked[:, columns[1]] * weights[1]
        horizontal >>= 4
        top = horizontal[row_of[: hi - lo]]
        bottom = horizontal[row_of[hi - lo :]]
        top *= wy0[lo:hi, None]
        top >>= 16
        bottom *= wy1[lo:hi, None]
        bottom >>= 16
        top += bottom
        top += 2
        top >>= 2  # weights sum to 2048 per axis, so 0 <= top <= 255: no clipping needed
        return top.astype(np.uint8)

    out = np.concatenate(_split_rows(rows, new_height))
    return out.reshape(new_height, new_width, channels)
