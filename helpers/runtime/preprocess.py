"""Serving-side preprocessing in NumPy + Pillow, bit-exact to the albumentations valid transform.

Training uses albumentations 2.0.8 (LongestMaxSize -> PadIfNeeded(center) -> Normalize) on OpenCV.
The Lambda has neither, and Pillow's resize is not OpenCV's (Pillow antialiases when shrinking), so
this module re-implements exactly what OpenCV computes for uint8 INTER_LINEAR:

* source coordinate per output pixel: (d + 0.5) * scale - 0.5 in float32, scale = 1 / (dst / src);
* x weights clamped at the borders, y weights NOT clamped (rows are clamped instead), both stored as
  round(w * 2048) (11-bit fixed point);
* horizontal pass in int32; vertical pass as OpenCV's SIMD kernel does it:
  ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16), then (v + 2) >> 2.
  (An exact 2x shrink is INTER_AREA in OpenCV; for 2x it gives the same numbers.)

preprocess() runs the same arithmetic, fused with the pad and Normalize, in letterbox_kernel.c when
that is built next to this file (helpers.build.native; the zip has it), and in NumPy otherwise: same numbers,
the C path faster (BENCHMARKS.md). tests/test_preprocess.py checks max abs difference 0 against
albumentations on every bundled image and on random sizes, for both paths. The guarantee starts at the
decoded pixels: training and serving both decode with decode_for_model (EXIF, modes, and JPEG DCT
scaling for photos at least twice the model size).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from helpers.runtime.config import MAX_IMAGE_PIXELS, PREPROCESS, PreprocessConfig

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS
_EXIF_ORIENTATION = 0x0112
#: The compiled letterbox_kernel.c (helpers.build.native builds it; absent: the NumPy path).
KERNEL_PATH = Path(__file__).with_name("_letterbox_kernel.so")


class ImageError(ValueError):
    """The bytes are not a usable image (-> HTTP 400)."""


class ImageTooLarge(ImageError):
    """The image exceeds the pixel budget (-> HTTP 413)."""


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How an original (height, width) image was placed in the square model input. `reduction` > 1:
    the pixels resized were the original decoded at 1/reduction per axis (JPEG DCT scaling, see
    decode_for_model); the scales still map original pixels to model-input pixels."""

    orig_height: int
    orig_width: int
    new_height: int
    new_width: int
    pad_top: int
    pad_left: int
    reduction: int = 1

    @property
    def scale_y(self) -> float:
        return self.new_height / (-(-self.orig_height // self.reduction) * self.reduction)

    @property
    def scale_x(self) -> float:
        return self.new_width / (-(-self.orig_width // self.reduction) * self.reduction)


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Pixels decoded for a model input, and the original image they stand for."""

    pixels: np.ndarray  # upright RGB uint8 (H, W, 3)
    reduction: int  # 1, 2, 4 or 8: pixels are the upright original at 1/reduction per axis
    height: int  # the original upright size
    width: int


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, pad_fill=PREPROCESS.pad_fill) -> np.ndarray:
    """Image bytes -> RGB uint8 array (H, W, 3) at full size, upright per EXIF orientation (see
    decode_for_model for the modes)."""
    return decode_for_model(data, None, max_pixels, pad_fill).pixels


def reduction_for(width: int, height: int, size: int | None) -> int:
    """The JPEG DCT scaling (1, 2, 4 or 8) decode_for_model uses: the largest that keeps both sides at
    least the letterbox's resized sides, so the linear resize still only shrinks (Pillow's draft rule)."""
    if size is None:
        return 1
    geometry = letterbox_geometry(height, width, size)
    most = min(width // geometry.new_width, height // geometry.new_height)
    return next((k for k in (8, 4, 2) if k <= most), 1)  # 1: no room (or an upscale)


def decode_for_model(
    data: bytes,
    size: int | None = PREPROCESS.image_size,
    max_pixels: int = MAX_IMAGE_PIXELS,
    pad_fill=PREPROCESS.pad_fill,
) -> Decoded:
    """Image bytes -> Decoded: upright RGB uint8 pixels for a model input of side `size`.

    A JPEG at least twice the letterbox's resized size is decoded at 1/2, 1/4 or 1/8 scale in the DCT
    domain (libjpeg's scaling, Pillow's draft): a 12 MP photo for 384 px decodes at 1/8, several times
    faster, and its pixels are an average over each 8x8 block instead of the full-size pixels that the
    linear resize would mostly skip. Training's dataset and the handler both decode here, so they see
    the same pixels; the resize that follows is the exact OpenCV INTER_LINEAR. Images below twice the
    size (the bundled 499x666 photos for 384) are decoded at full size. `size=None`: always full size.

    Mode conversion: alpha (RGBA, LA, PA, P with transparency) is composited onto the pad colour,
    because that is the colour the model learnt as "nothing here" (the letterbox padding); dropping
    alpha would expose whatever RGB sits under transparent pixels. 16-bit and 32-bit integer grey
    (I;16, I) is scaled by 1/257 so 65535 -> 255 (Pillow's own convert clips at 255); float grey (F)
    is clipped to 0..255. CMYK, YCbCr, LAB, HSV, 1, L and P use Pillow's conversion (no ICC profile).
    """
    if not data:
        raise ImageError("empty image")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Image.DecompressionBombError as err:  # Pillow's own guard, above 2x its default budget
        raise ImageTooLarge(f"image too large: {err}") from None
    except (OSError, ValueError) as err:
        raise ImageError(f"cannot read image header: {err}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; limit {max_pixels}")
    try:
        # The orientation decides which stored side is the upright height; the tag is read before decoding.
        swapped = image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
        reduction = reduction_for(width, height, size) if image.format in ("JPEG", "MPO") else 1
        if reduction > 1:
            image.draft(None, (width // reduction, height // reduction))  # Pillow then picks `reduction`
            reduction = round(width / image.size[0])  # 1 where Pillow cannot scale this file's layout
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy when already upright
        pixels = _to_rgb(image, pad_fill)
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(str(err)) from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"cannot decode image: {err}") from None
    return Decoded(pixels, reduction, width if swapped else height, height if swapped else width)


def _to_rgb(image: Image.Image, pad_fill) -> np.ndarray:
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        fill = np.asarray(pad_fill, dtype=np.float32)
        return np.rint(rgba[..., :3] * alpha + fill * (1.0 - alpha)).astype(np.uint8)
    if mode.startswith("I"):
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode != "RGB":
        image = image.convert("RGB")
    return _shared_rgb(image)


class _ArrowArray(ctypes.Structure):
    """struct ArrowArray of the Arrow C data interface (a stable ABI)."""


_ArrowArray._fields_ = [
    *((name, ctypes.c_int64) for name in ("length", "null_count", "offset", "n_buffers", "n_children")),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    *((name, ctypes.c_void_p) for name in ("dictionary", "release", "private_data")),
]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


def _shared_rgb(image: Image.Image) -> np.ndarray:
    """An RGB image's pixels as a read-only (H, W, 3) view of Pillow's own memory, without a copy.

    Pillow keeps RGB as 4 bytes per pixel and exports that buffer through the Arrow C data interface
    (__arrow_c_array__, a list of 4 uint8 per pixel); the view keeps the export alive, and with it the
    memory. np.asarray would repack it into a new 3-byte buffer: a third of the decode time at the
    sample size. Pillow exports only images held in one block (up to 16 MB, about 4 MP); larger
    ones are copied."""
    width, height = image.size
    try:
        _, exported = image.__arrow_c_array__()
    except ValueError:  # "Image rows are not contiguous in memory": several blocks
        return np.asarray(image, dtype=np.uint8)
    pixels = _ArrowArray.from_address(_capsule_pointer(exported, b"arrow_array")).children[0].contents
    memory = (ctypes.c_uint8 * (height * width * 4)).from_address(pixels.buffers[1])
    memory.export = exported  # released (and the pixels freed) when the last view goes
    view = np.frombuffer(memory, np.uint8).reshape(height, width, 4)[:, :, :3]
    view.flags.writeable = False
    return view


@functools.lru_cache(maxsize=64)
def _linear_taps(src: int, dst: int, clamp_weights: bool):
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
    try:
        return max(1, min(2, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return 1


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

    Output rows are split between the CPUs this process may use (NumPy releases the GIL in these
    loops): Lambda gives 2 vCPUs from 3,538 MB, and the split changes no arithmetic."""
    height, width, channels = image.shape
    if (new_height, new_width) == (height, width):
        return image
    x0, x1, wx0, wx1 = _linear_taps(width, new_width, clamp_weights=True)
    y0, y1, wy0, wy1 = _linear_taps(height, new_height, clamp_weights=False)
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


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
    """albumentations LongestMaxSize(size) + PadIfNeeded(size, size, position='center')."""
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    return Letterbox(height, width, new_height, new_width, (size - new_height) // 2, (size - new_width) // 2)


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


def _resize_into_letterbox(image: np.ndarray | Decoded, config: PreprocessConfig):
    """The LongestMaxSize step: (resized uint8 image, Letterbox from the original image)."""
    pixels, geometry = _placement(image, config)
    return resize_linear(pixels, geometry.new_height, geometry.new_width), geometry


def letterbox(image: np.ndarray | Decoded, config: PreprocessConfig = PREPROCESS):
    """RGB uint8 (H, W, 3) or Decoded -> (size x size x 3 uint8 padded with config.pad_fill, Letterbox)."""
    resized, geometry = _resize_into_letterbox(image, config)
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


def preprocess(image: np.ndarray | Decoded, config: PreprocessConfig = PREPROCESS):
    """RGB uint8 image or Decoded -> (model input float32 1x3xSxS, Letterbox).

    Equal to letterbox() followed by albumentations Normalize and HWC->CHW, in one pass of
    letterbox_kernel.c when it is built (see kernel()), else preprocess_numpy(): same numbers."""
    function = kernel()
    if function is None:
        return preprocess_numpy(image, config)
    pixels, geometry = _placement(image, config)
    tensor = np.empty((1, 3, config.image_size, config.image_size), dtype=np.float32)
    _letterbox_native(function, pixels, geometry, tensor, _normalisation_constants(config))
    return tensor, geometry


def preprocess_numpy(image: np.ndarray | Decoded, config: PreprocessConfig = PREPROCESS):
    """preprocess() in NumPy, for where the kernel is not built: resize_linear, then Normalize on the
    resized region only, the padding filled with the normalised pad colour (it is constant)."""
    pixels, geometry = _placement(image, config)
    resized = resize_linear(pixels, geometry.new_height, geometry.new_width)
    mean, denominator, pad = _normalisation_constants(config)
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


def _normalisation_constants(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, denominator, the pad colour normalised), float32 per channel."""
    mean, denominator = normalization(config)
    pad = (np.asarray(config.pad_fill, dtype=np.uint8).astype(np.float32) - mean) * denominator
    return mean, denominator, pad


_POINTER = ctypes.c_void_p


@functools.cache
def kernel():
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
    function.argtypes = [_POINTER, ctypes.c_int64] + [_POINTER] * 8 + [ctypes.c_int] * 5 + [_POINTER] * 5
    function.restype = None
    return function


@functools.lru_cache(maxsize=64)
def _byte_offsets(src: int, dst: int, pixel_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal taps as byte offsets into a row, for the kernel: 3 bytes per pixel from NumPy,
    4 from Pillow's own memory (see _shared_rgb)."""
    x0, x1, _, _ = _linear_taps(src, dst, clamp_weights=True)
    return x0 * pixel_stride, x1 * pixel_stride


def _letterbox_native(function, pixels: np.ndarray, geometry: Letterbox, tensor: np.ndarray, normalise) -> None:
    """Resize + pad + Normalize in C into `tensor`, on this thread (at 384 px one thread beat two, warm
    and after an idle pause: see BENCHMARKS.md)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, not {pixels.dtype} {pixels.shape}")
    if pixels.strides[2] != 1 or min(pixels.strides) < 1:  # the kernel steps rows and pixels forwards
        pixels = np.ascontiguousarray(pixels)
    height, width, _ = pixels.shape
    new_height, new_width = geometry.new_height, geometry.new_width
    _, _, wx0, wx1 = _linear_taps(width, new_width, clamp_weights=True)
    offsets = _byte_offsets(width, new_width, pixels.strides[1])
    tables = (*offsets, wx0, wx1, *_linear_taps(height, new_height, clamp_weights=False))
    scratch = np.empty(6 * new_width, np.int16)
    function(
        pixels.ctypes.data, pixels.strides[0], *(a.ctypes.data for a in tables), new_height, new_width,
        tensor.shape[-1], geometry.pad_top, geometry.pad_left, *(a.ctypes.data for a in normalise),
        scratch.ctypes.data, tensor.ctypes.data,
    )  # fmt: skip
