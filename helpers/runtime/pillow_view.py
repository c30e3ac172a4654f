"""Pillow's decoded pixels as a NumPy view, without a copy: the one module that uses Pillow's private
and low-level API (Image.core's block size, the Arrow C data export read through ctypes).

np.asarray would repack RGB into a new 3-byte buffer (a copy the size of the image); the view reads
Pillow's own 4-byte-per-pixel memory in place. Every layout is checked against the image's size before
the memory is read; anything else returns None and the caller converts the image instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

import numpy as np
from PIL import Image


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


_BLOCK_LOCK = threading.Lock()
_block_users = 0
_block_size_before = 0


@contextlib.contextmanager
def one_block():
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


def shared_pixels(image: Image.Image) -> np.ndarray | None:
    """A loaded image's pixels as a writable (H, W, 1 or 4) uint8 view of Pillow's own memory, without
    a copy, or None when Pillow does not export it in a layout read here (then it is converted).

    Pillow exports an image held in one block through the Arrow C data interface (__arrow_c_array__):
    RGB and 4-byte modes as fixed-size lists of 4 uint8 per pixel, L, P and 1 as uint8. The view keeps
    the export alive, and with it the memory."""
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
