"""Image bytes -> upright RGB uint8 pixels, the same for training and serving (EXIF orientation, every
Pillow mode, JPEG DCT scaling, size guards before decoding).

Memory stays near the decoded image itself (tests/test_memory.py): the pixels are a view of Pillow's
memory where it allows (helpers.runtime.pillow_view), other modes are converted tile by tile (in place
where Pillow stores 4 bytes per pixel), grey stays one byte per pixel (the three channels are a view),
and the EXIF orientation is a view too (the letterbox kernel reads any strides).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from helpers.runtime.config import MAX_IMAGE_PIXELS, PREPROCESS
from helpers.runtime.errors import ImageError, ImageTooLarge
from helpers.runtime.geometry import letterbox_geometry
from helpers.runtime.pillow_view import one_block, shared_pixels

EXIF_ORIENTATION = 0x0112
#: EXIF orientation -> (row step, column step) after the transpose of 5-8.
_FLIPS = {2: (1, -1), 3: (-1, -1), 4: (-1, 1), 6: (1, -1), 7: (-1, -1), 8: (-1, 1)}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: Converted per tile of at most this many pixels: the float temporaries stay a few MB at any size.
_TILE_PIXELS = 1 << 18
#: Pillow decodes WebP with libwebp's animation decoder, which holds two more full RGBA canvases and
#: hands the frame over as a bytes copy: about four times the memory of the image, so a quarter of the limit.
_WEBP_COST = 4


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Pixels decoded for a model input, and the original image they stand for."""

    pixels: np.ndarray  # upright RGB uint8 (H, W, 3)
    reduction: int  # 1, 2, 4 or 8: pixels are the upright original at 1/reduction per axis
    height: int  # the original upright size
    width: int


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8; 1 when absent) of an opened image."""
    return image.getexif().get(EXIF_ORIENTATION, 1)


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of a stored width x height image once its EXIF orientation is applied."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


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
    domain (libjpeg's scaling, Pillow's draft): faster, and its pixels are an average over each block
    instead of the full-size pixels that the linear resize would mostly skip. Training's dataset and the
    handler both decode here, so they see the same pixels. Smaller images are decoded at full size;
    `size=None`: always full size. Only the first frame of an animated or multi-page file is decoded.

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
        with one_block():  # from here: a PNG's EXIF can follow its pixels, so getexif may decode them
            # The orientation decides which stored side is the upright height, read before any draft.
            orientation = exif_orientation(image)
            reduction = reduction_for(width, height, size) if image.format in ("JPEG", "MPO") else 1
            if reduction > 1:
                image.draft(None, (width // reduction, height // reduction))  # Pillow then picks `reduction`
                reduction = round(width / image.size[0])  # 1 where Pillow cannot scale this file's layout
            pixels = _upright(_to_rgb(image, pad_fill), orientation)
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(str(err)) from None
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"cannot decode image: {err}") from None
    upright_width, upright_height = upright_size(width, height, orientation)
    return Decoded(pixels, reduction, upright_height, upright_width)


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


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """ImageOps.exif_transpose as a view: flips and transposes of the stored pixels, no copy."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.transpose(1, 0, 2)
    rows, columns = _FLIPS.get(orientation, (1, 1))
    return pixels[::rows, ::columns]


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
    shared = shared_pixels(image)
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
