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

import contextlib
import ctypes
import dataclasses
import functools
import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

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

    Only the first frame of an animated or multi-page file (GIF, WebP, TIFF, APNG) is decoded.

    Memory stays near the decoded image itself (BENCHMARKS.md, tests/test_memory.py): Pillow holds the
    image in one block that the pixels are a view of, other modes are converted tile by tile (in place
    where Pillow stores 4 bytes per pixel), grey stays one byte per pixel (the three channels are a view),
    and the EXIF orientation is a view too (the kernel reads any strides).

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
    _check_size(image.format, width, height, size, max_pixels)
    try:
        with _one_block():  # from here: a PNG's EXIF can follow its pixels, so getexif may decode them
            # The orientation decides which stored side is the upright height, read before any draft.
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            reduction = reduction_for(width, height, size) if image.format in ("JPEG", "MPO") else 1
            if reduction > 1:
                image.draft(None, (width // reduction, height // reduction))  # Pillow then picks `reduction`
                reduction = round(width / image.size[0])  # 1 where Pillow cannot scale this file's layout
            pixels = _upright(_to_rgb(image, pad_fill), orientation)
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(str(err)) from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"cannot decode image: {err}") from None
    swapped = orientation in (5, 6, 7, 8)
    return Decoded(pixels, reduction, width if swapped else height, height if swapped else width)


#: Pillow decodes WebP with libwebp's animation decoder, which holds two more full RGBA canvases and
#: hands the frame over as a bytes copy: about four times the memory of the image, so a quarter of the limit.
_WEBP_COST = 4


def _check_size(fmt: str | None, width: int, height: int, size: int | None, max_pixels: int) -> None:
    """Refuse, before decoding, what the pixel budget cannot hold: more pixels than `max_pixels` (a
    quarter of it for WebP), or, for a model input of side `size`, a side more than 2 * size times the
    other. Such a strip is under half a pixel wide in the model input, and Pillow keeps an 8-byte
    pointer per row: a 1 x 39M image would cost 312 MB before its pixels."""
    pixels = width * height
    if pixels > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {pixels} pixels; limit {max_pixels}")
    if fmt == "WEBP" and pixels * _WEBP_COST > max_pixels:
        limit = max_pixels // _WEBP_COST
        raise ImageTooLarge(f"WebP image is {width}x{height} = {pixels} pixels; limit for WebP {limit}")
    if size is not None and max(width, height) > 2 * size * min(width, height):
        raise ImageError(f"image is {width}x{height}: a side more than {2 * size} times the other")


#: EXIF orientation -> (row step, column step) after the transpose of 5-8.
_FLIPS = {2: (1, -1), 3: (-1, -1), 4: (-1, 1), 6: (1, -1), 7: (-1, -1), 8: (-1, 1)}


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """ImageOps.exif_transpose as a view: flips and transposes of the stored pixels, no copy."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.transpose(1, 0, 2)
    rows, columns = _FLIPS.get(orientation, (1, 1))
    return pixels[::rows, ::columns]


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Converted per tile of at most this many pixels: the float temporaries stay a few MB at any size.
_TILE_PIXELS = 1 << 18


_BLOCK_LOCK = threading.Lock()
_block_users = 0
_block_size_before = 0


@contextlib.contextmanager
def _one_block():
    """Pillow allocates images in blocks of 16 MB and exports (for a view) only images in one block:
    while decoding, a block holds any image within the limits (an image's block is its own size).
    The block size is process-wide, so concurrent decodes (threads) share one raise and the last one
    out restores it; a per-call save and restore would leave it raised when two overlap."""
    global _block_users, _block_size_before
    with _BLOCK_LOCK:
        if _block_users == 0:
            _block_size_before = Image.core.get_block_size()
            Image.core.set_block_size(max(_block_size_before, 1 << 30))
        _block_users += 1
    try:
        yield
    finally:
        with _BLOCK_LOCK:
            _block_users -= 1
            if _block_users == 0:
                Image.core.set_block_size(_block_size_before)


def _to_rgb(image: Image.Image, pad_fill) -> np.ndarray:
    """The first frame as (H, W, 3) uint8 pixels, read-only, in the stored orientation; closes `image`.

    RGB and L are views of Pillow's memory; modes Pillow stores in 4 bytes per pixel are converted in
    place, tile by tile; the rest are converted tile by tile into a new array (one byte per pixel for
    the grey modes). Each tile goes through the same formulas as a whole image would, so the numbers
    do not depend on the tiling."""
    image.load()
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        mode = "RGBA"  # converted per tile, see _convert_tile
    shared = _shared_pixels(image)
    if mode in ("RGB", "L") and shared is not None:
        pixels = shared
    elif mode in ("L", "1", "F") or mode.startswith("I"):
        pixels = np.empty((image.height, image.width, 1), np.uint8)
        _convert_tiles(image, pixels, lambda tile: _grey_tile(tile)[..., None])
    else:
        in_place = shared is not None and shared.shape[2] == 4
        pixels = shared if in_place else np.empty((image.height, image.width, 3), np.uint8)
        _convert_tiles(image, pixels[:, :, :3], lambda tile: _convert_tile(tile, mode, pad_fill))
    image.close()  # its memory goes now unless the pixels are a view of it
    pixels = pixels[:, :, :3] if pixels.shape[2] >= 3 else np.broadcast_to(pixels, (*pixels.shape[:2], 3))
    if pixels.flags.writeable:
        pixels.flags.writeable = False
    return pixels


def _convert_tiles(image: Image.Image, out: np.ndarray, convert) -> None:
    """out[tile] = convert(image's pixels in that tile), over tiles of at most _TILE_PIXELS; `out` may
    be a view of the image's own memory (each tile is copied out before it is written)."""
    width, height = image.size
    columns = min(width, _TILE_PIXELS)
    rows = max(1, _TILE_PIXELS // columns)
    for top in range(0, height, rows):
        for left in range(0, width, columns):
            box = (left, top, min(left + columns, width), min(top + rows, height))
            out[box[1] : box[3], box[0] : box[2]] = convert(image.crop(box))


def _convert_tile(tile: Image.Image, mode: str, pad_fill) -> np.ndarray:
    if mode in _ALPHA_MODES:
        rgba = np.asarray(tile.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        fill = np.asarray(pad_fill, dtype=np.float32)
        return np.rint(rgba[..., :3] * alpha + fill * (1.0 - alpha)).astype(np.uint8)
    return np.asarray(tile.convert("RGB"))


def _grey_tile(tile: Image.Image) -> np.ndarray:
    if tile.mode.startswith("I"):
        grey = np.asarray(tile, dtype=np.float64)
        return np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
    if tile.mode == "F":
        return np.clip(np.rint(np.asarray(tile, dtype=np.float64)), 0, 255).astype(np.uint8)
    return np.asarray(tile.convert("L"))


class _ArrowSchema(ctypes.Structure):
    """struct ArrowSchema of the Arrow C data interface (a stable ABI)."""


_ArrowSchema._fields_ = [
    *((name, ctypes.c_char_p) for name in ("format", "name", "metadata")),
    *((name, ctypes.c_int64) for name in ("flags", "n_children")),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowSchema))),
    *((name, ctypes.c_void_p) for name in ("dictionary", "release", "private_data")),
]


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


def _plain_bytes(schema: _ArrowSchema, array: _ArrowArray, length: int) -> int | None:
    """The data address of an exported array of `length` uint8 ("C") with no nulls, no offset and no
    children, else None."""
    if schema.format != b"C" or schema.n_children != 0 or schema.dictionary:
        return None
    if (array.length, array.offset, array.null_count, array.n_buffers, array.n_children) != (length, 0, 0, 2, 0):
        return None
    return array.buffers[1] or None


def _exported_address(schema: _ArrowSchema, array: _ArrowArray, width: int, height: int) -> tuple[int, int] | None:
    """(data address, bytes per pixel) of Pillow's export of a width x height image if it has one of
    the two layouts read here (1 byte per pixel, or fixed-size lists of 4 bytes), else None."""
    pixels = width * height
    if schema.format == b"C":
        address = _plain_bytes(schema, array, pixels)
        return None if address is None else (address, 1)
    if schema.format != b"+w:4" or schema.n_children != 1 or schema.dictionary:
        return None
    if (array.length, array.offset, array.null_count, array.n_buffers, array.n_children) != (pixels, 0, 0, 1, 1):
        return None
    address = _plain_bytes(schema.children[0].contents, array.children[0].contents, pixels * 4)
    return None if address is None else (address, 4)


def _shared_pixels(image: Image.Image) -> np.ndarray | None:
    """A loaded image's pixels as a writable (H, W, 1 or 4) uint8 view of Pillow's own memory, without
    a copy, or None when Pillow does not export it in a layout read here (then it is converted).

    Pillow exports an image held in one block through the Arrow C data interface (__arrow_c_array__):
    RGB and 4-byte modes as fixed-size lists of 4 uint8 per pixel, L, P and 1 as uint8. The schema and
    array are checked against the image's size before the memory is read; the view keeps the export
    alive, and with it the memory. np.asarray would repack RGB into a new 3-byte buffer: a third of the
    decode time at the sample size, 120 MB at 40 MP."""
    width, height = image.size
    try:
        schema_capsule, array_capsule = image.__arrow_c_array__()
    except ValueError:  # "Image rows are not contiguous in memory": several blocks
        return None
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    exported = _exported_address(schema, array, width, height)
    if exported is None:
        return None
    address, depth = exported
    memory = (ctypes.c_uint8 * (height * width * depth)).from_address(address)
    memory.export = array_capsule  # released (and the pixels freed) when the last view goes
    return np.frombuffer(memory, np.uint8).reshape(height, width, depth)


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
    function.argtypes = _ARGTYPES
    function.restype = None
    return function


@functools.lru_cache(maxsize=64)
def _byte_offsets(src: int, dst: int, pixel_step: int) -> tuple[np.ndarray, np.ndarray]:
    """The horizontal taps as 64-bit byte offsets from a row's first pixel, for the kernel: any pixel
    step (3 bytes from NumPy, 4 from Pillow's memory, negative for a flip, a row's for a transpose)."""
    x0, x1, _, _ = _linear_taps(src, dst, clamp_weights=True)
    offsets = x0.astype(np.int64) * pixel_step, x1.astype(np.int64) * pixel_step
    for table in offsets:
        table.flags.writeable = False
    return offsets


def _letterbox_native(function, pixels: np.ndarray, geometry: Letterbox, tensor: np.ndarray, normalise) -> None:
    """Resize + pad + Normalize in C into `tensor`, on this thread (at 384 px one thread beat two, warm
    and after an idle pause: see BENCHMARKS.md).

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
    _, _, wx0, wx1 = _linear_taps(width, new_width, clamp_weights=True)
    rows = _linear_taps(height, new_height, clamp_weights=False)
    tables = (*_byte_offsets(width, new_width, pixel_step), wx0, wx1, *rows)
    scratch = np.empty(6 * new_width, np.int16)
    function(
        pixels, row_step, channel_step, *tables, new_height, new_width, size,
        geometry.pad_top, geometry.pad_left, *normalise, scratch, tensor,
    )  # fmt: skip
