"""Serving preprocessing (NumPy + Pillow) against the training pipeline (albumentations 2.0.8)."""

import io

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers.data import dataset as fridge_data
from helpers.data.records import Record
from helpers.paths import THUMBNAILS_DIR
from helpers.runtime import decode, errors, kernel, pillow_view, resize
from helpers.runtime import preprocess as pp
from helpers.runtime.config import PREPROCESS
from helpers.runtime.geometry import letterbox_geometry
from helpers.runtime.postprocess import letterbox_boxes, restore_boxes, to_detections
from helpers.train.transforms import valid_transform

ALBU_LETTERBOX = valid_transform(PREPROCESS, with_normalize=False)
ALBU_FULL = valid_transform(PREPROCESS)


def _albu(image, transform=ALBU_LETTERBOX):
    return transform(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"]


def _bundled_images():
    paths = sorted(fridge_data.SAMPLE_DIR.glob("images/*.jpg"))
    paths += sorted(THUMBNAILS_DIR.glob("*.jpg"))
    return paths


def test_letterbox_is_bit_exact_on_every_bundled_image():
    paths = _bundled_images()
    assert len(paths) == 6 + 134
    for path in paths:
        image = decode.decode_image(path.read_bytes())
        ours, _ = pp.letterbox(image)
        assert ours.dtype == np.uint8 and ours.shape == (384, 384, 3)
        assert np.array_equal(ours, _albu(image)), path.name


@pytest.mark.parametrize("seed", range(4))
def test_letterbox_is_bit_exact_on_random_sizes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        height, width = (int(v) for v in rng.integers(1, 1400, 2))
        if rng.random() < 0.3:  # extreme aspect ratios and tiny sides
            height = int(rng.integers(1, 8))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours, _ = pp.letterbox(image)
        assert np.array_equal(ours, _albu(image)), (height, width)


@pytest.mark.parametrize("shape", [(768, 1024), (768, 768), (384, 200), (192, 96), (1, 1), (1, 5000), (1152, 300)])
def test_letterbox_special_scales(shape):
    """2x shrink (OpenCV switches to INTER_AREA), scale 1 (no resize), upscales, 1-pixel sides."""
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert np.array_equal(pp.letterbox(image)[0], _albu(image))


def test_resize_matches_cv2_inter_linear_for_arbitrary_targets():
    rng = np.random.default_rng(7)
    for _ in range(30):
        h, w, nh, nw = (int(v) for v in rng.integers(1, 600, 4))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(resize.resize_linear(image, nh, nw), expected), (h, w, nh, nw)


def test_geometry_rules_match_albumentations_2_0_8():
    # 499x666 (WxH) -> 288x384; odd padding 96 -> 48/48; 101 rows of pad -> top 50, bottom 51.
    g = letterbox_geometry(666, 499, 384)
    assert (g.new_height, g.new_width, g.pad_top, g.pad_left) == (384, 288, 0, 48)
    g = letterbox_geometry(100, 135, 384)  # 100*384/135 = 284.44 -> 284, pad 100 -> 50/50
    assert (g.new_height, g.pad_top) == (284, 50)
    image = np.zeros((283, 384, 3), np.uint8)  # scale 1: no resize, 101 rows of padding
    out = _albu(image)
    assert (out[49, 0] == PREPROCESS.pad_fill).all() and (out[50, 0] == 0).all()
    assert (out[332, 0] == 0).all() and (out[333, 0] == PREPROCESS.pad_fill).all()
    ours, g = pp.letterbox(image)
    assert (g.pad_top, g.new_height) == (50, 283) and np.array_equal(ours, out)


@pytest.fixture(params=["kernel", "numpy"])
def preprocess_path(request, monkeypatch):
    """preprocess() as the Lambda runs it (the compiled letterbox kernel; conftest builds it) and as it
    runs where the kernel is absent (NumPy)."""
    if request.param == "kernel":
        assert kernel.load_kernel() is not None, "letterbox kernel not built (python -m helpers native)"
    else:
        monkeypatch.setattr(kernel, "load_kernel", lambda: None)
    return request.param


def _albu_tensor(image):
    return _albu(np.ascontiguousarray(image), ALBU_FULL).transpose(2, 0, 1)[None]


def test_normalised_tensor_is_bit_exact_on_every_bundled_image(preprocess_path):
    for path in _bundled_images():
        decoded = decode.decode_for_model(path.read_bytes())
        ours, _ = pp.preprocess(decoded)
        assert ours.dtype == np.float32 and ours.shape == (1, 3, 384, 384)
        assert np.array_equal(ours, _albu_tensor(decoded.pixels)), path.name


@pytest.mark.parametrize("seed", range(3))
def test_normalised_tensor_is_bit_exact_on_random_sizes_and_layouts(preprocess_path, seed):
    """Shrinks, upscales, scale 1, 1-pixel sides; packed RGB arrays and Pillow's 4-byte pixels."""
    rng = np.random.default_rng(seed)
    shapes = [(768, 1024), (384, 200), (1, 1), (1, 5000), (1152, 300)] if seed == 0 else []
    shapes += [tuple(int(v) for v in rng.integers(1, 1400, 2)) for _ in range(20)]
    for height, width in shapes:
        rgbx = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        for image in (np.ascontiguousarray(rgbx[:, :, :3]), rgbx[:, :, :3]):
            assert np.array_equal(pp.preprocess(image)[0], _albu_tensor(image)), (height, width, image.strides)


def test_decoded_pixels_are_pillows_own_memory_and_outlive_the_image():
    import gc

    data = (fridge_data.SAMPLE_DIR / "images" / "10.jpg").read_bytes()
    pixels = decode.decode_image(data)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert pixels.strides == (499 * 4, 4, 1) and not pixels.flags.owndata and not pixels.flags.writeable
    gc.collect()
    for _ in range(5):  # reuse of freed memory would show here
        decode.decode_image(_encode(Image.fromarray(255 - expected), "PNG"))
    assert np.array_equal(pixels, expected)


def test_images_pillow_holds_in_several_blocks_are_copied(monkeypatch):
    """Decoding holds images in one block (_one_block); one above it (training has no pixel limit) is
    in several, which Pillow does not export: copied."""
    import contextlib

    rgb = np.random.default_rng(2).integers(0, 256, (2100, 2100, 3), dtype=np.uint8)  # 17.6 MB as RGBX
    data = _encode(Image.fromarray(rgb), "PNG")
    assert not decode.decode_image(data).flags.owndata  # one block: a view
    monkeypatch.setattr(decode, "one_block", contextlib.nullcontext)  # Pillow's 16 MB blocks
    pixels = decode.decode_image(data)
    assert pixels.flags.c_contiguous and np.array_equal(pixels, rgb)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_decode_modes_to_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    assert np.array_equal(decode.decode_image(_encode(base, "PNG")), rgb)
    grey = decode.decode_image(_encode(base.convert("L"), "PNG"))
    assert grey.shape == (20, 30, 3) and (grey[..., 0] == grey[..., 2]).all()
    cmyk = decode.decode_image(_encode(base.convert("CMYK"), "JPEG", quality=95))
    assert cmyk.shape == (20, 30, 3) and np.abs(cmyk.astype(int) - rgb).mean() < 12
    # Transparent pixels become the pad colour; opaque ones keep their colour.
    rgba = np.dstack([rgb, np.where(np.arange(30) < 15, 0, 255)[None].repeat(20, 0)]).astype(np.uint8)
    out = decode.decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (out[:, :15] == PREPROCESS.pad_fill).all() and np.array_equal(out[:, 15:], rgb[:, 15:])
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert (decode.decode_image(_encode(la, "PNG"))[:, :15] == PREPROCESS.pad_fill).all()
    # 16-bit grey: full range maps to 0..255 (Pillow's convert("L") would clip at 255).
    deep = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    out = decode.decode_image(_encode(deep, "PNG"))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_exif_orientation_is_applied():
    rgb = np.zeros((10, 40, 3), np.uint8)
    rgb[:, :5] = 255  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    data = _encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95)
    out = decode.decode_image(data)
    assert out.shape == (40, 10, 3)
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # stripe now on top


def test_bad_bytes_and_pixel_bombs_raise_clear_errors(sample_jpegs):
    with pytest.raises(errors.ImageError, match="empty"):
        decode.decode_image(b"")
    with pytest.raises(errors.ImageError, match="not a recognised image"):
        decode.decode_image(b"this is not an image" * 10)
    truncated = sample_jpegs["10.jpg"][: len(sample_jpegs["10.jpg"]) // 2]
    with pytest.raises(errors.ImageError, match="cannot decode"):
        decode.decode_image(truncated)
    bomb = _encode(Image.new("L", (30000, 30000)), "PNG")  # ~1 MB of zlib for 900 MP
    assert len(bomb) < 2_000_000
    with pytest.raises(errors.ImageTooLarge, match="900000000 pixels"):
        decode.decode_image(bomb)
    below_pillow_guard = _encode(Image.new("L", (12000, 12000)), "PNG")
    with pytest.raises(errors.ImageTooLarge, match="12000x12000"):
        decode.decode_image(below_pillow_guard)
    with pytest.raises(errors.ImageTooLarge, match="limit 1000"):
        decode.decode_image(sample_jpegs["10.jpg"], max_pixels=1000)


sides = st.integers(min_value=1, max_value=5000)


@settings(max_examples=300, deadline=None)
@given(height=sides, width=sides, data=st.data())
def test_letterbox_then_inverse_maps_boxes_back(height, width, data):
    geometry = letterbox_geometry(height, width, PREPROCESS.image_size)
    assert 0 <= geometry.pad_top and geometry.pad_top + geometry.new_height <= 384
    assert 0 <= geometry.pad_left and geometry.pad_left + geometry.new_width <= 384
    xs = sorted(data.draw(st.lists(st.floats(0, width), min_size=2, max_size=2)))
    ys = sorted(data.draw(st.lists(st.floats(0, height), min_size=2, max_size=2)))
    box = np.array([[xs[0], ys[0], xs[1], ys[1]]])
    forward = letterbox_boxes(box, geometry)
    assert (forward >= 0).all() and (forward <= 384 + 1e-9).all()
    back = restore_boxes(forward, geometry)
    assert np.abs(back - box).max() <= 1e-6
    assert (back[:, 0::2] >= 0).all() and (back[:, 0::2] <= width).all()
    assert (back[:, 1::2] >= 0).all() and (back[:, 1::2] <= height).all()


def test_albumentations_moves_boxes_as_letterbox_boxes_says(sample_records):
    record = sample_records[0]
    image = decode.decode_image(record.image_path.read_bytes())
    out = ALBU_LETTERBOX(image=image, bboxes=np.array(record.boxes), labels=record.labels)
    geometry = pp.letterbox(image)[1]
    assert np.abs(np.array(out["bboxes"]) - letterbox_boxes(np.array(record.boxes), geometry)).max() < 1e-3


# A 1024x768 portrait and a 768x1024 landscape photo: scale 0.375 (exact in binary), 48 px of padding
# on the left and on the top respectively.
PORTRAIT, LANDSCAPE = letterbox_geometry(1024, 768, 384), letterbox_geometry(768, 1024, 384)


@pytest.mark.parametrize(
    "geometry, model_box, original_box",
    [
        (PORTRAIT, [51, 3, 100, 50], [8, 8, 416 / 3, 400 / 3]),  # integer pixels: no truncation
        (PORTRAIT, [10, 0, 400, 384], [0, 0, 768, 1024]),  # past the image left and right: clipped
        (LANDSCAPE, [3, 51, 50, 100], [8, 8, 400 / 3, 416 / 3]),
        (LANDSCAPE, [0, 10, 384, 380], [0, 0, 1024, 768]),  # past the image top and bottom: clipped
    ],
)
def test_restore_boxes_removes_the_pad_divides_by_the_scale_and_clips_to_the_image(geometry, model_box, original_box):
    restored = restore_boxes([model_box], geometry)
    assert restored.dtype == np.float64
    np.testing.assert_allclose(restored, [original_box], rtol=1e-12)


@pytest.mark.parametrize(
    "geometry, original_box, model_box",
    [
        (PORTRAIT, [100, 200, 300, 400], [85.5, 75, 160.5, 150]),
        (LANDSCAPE, [100, 200, 300, 400], [37.5, 123, 112.5, 198]),
    ],
)
def test_letterbox_boxes_scales_integer_pixels_without_truncating(geometry, original_box, model_box):
    assert letterbox_boxes([original_box], geometry).tolist() == [model_box]


@pytest.mark.parametrize(
    "geometry, padding_box, image_box, restored_box",
    [
        (PORTRAIT, [10, 100, 40, 200], [51, 3, 100, 50], [8, 8, 416 / 3, 400 / 3]),  # left padding: no width
        (LANDSCAPE, [100, 10, 200, 40], [3, 51, 50, 100], [8, 8, 400 / 3, 416 / 3]),  # top padding: no height
    ],
)
def test_a_box_in_the_padding_is_dropped_even_when_it_scores_best(geometry, padding_box, image_box, restored_box):
    found = to_detections(np.array([padding_box, image_box], np.float32), [0.9, 0.8], [1, 2], geometry, 0.5, 10)
    assert found.scores.tolist() == [pytest.approx(0.8)] and found.labels.tolist() == [2]
    np.testing.assert_allclose(found.boxes, [restored_box], rtol=1e-6)


def test_detections_of_equal_score_keep_the_models_order():
    """Stable sort: ties keep the order the model emitted them in (NumPy's default quicksort does not for
    16 alternating scores)."""
    boxes = np.array([[i, i, i + 10, i + 10] for i in range(16)], np.float32)
    scores = [0.5, 0.9] * 8
    found = to_detections(boxes, scores, np.ones(16, int), letterbox_geometry(384, 384, 384), 0.3, 16)
    assert found.boxes[:, 0].tolist() == [*range(1, 16, 2), *range(0, 16, 2)]
    assert found.scores.tolist() == [0.9] * 8 + [0.5] * 8


# ---- JPEG DCT scaling (decode_for_model) -------------------------------------------------------


def _big_photo(width: int, height: int, orientation: int | None = None) -> bytes:
    """A real photo's pixels tiled to width x height, as a phone-like JPEG (optionally EXIF-rotated)."""
    tile = Image.open(fridge_data.SAMPLE_DIR / "images" / "10.jpg").convert("RGB")
    canvas = Image.new("RGB", (width, height))
    for x in range(0, width, tile.width):
        for y in range(0, height, tile.height):
            canvas.paste(tile, (x, y))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    return _encode(canvas, "JPEG", quality=90, exif=exif)


def test_bundled_images_are_not_reduced_and_decode_as_before():
    for path in _bundled_images():
        data = path.read_bytes()
        decoded = decode.decode_for_model(data, PREPROCESS.image_size)
        assert decoded.reduction == 1 and np.array_equal(decoded.pixels, decode.decode_image(data))
        assert (decoded.height, decoded.width) == decoded.pixels.shape[:2]


@pytest.mark.parametrize(
    "width, height, reduction",
    [(4000, 3000, 8), (2309, 1732, 4), (1154, 866, 2), (632, 474, 1), (767, 1000, 2), (3000, 4000, 8)],
)
def test_reduction_keeps_both_sides_at_least_the_resized_sides(width, height, reduction):
    data = _big_photo(width, height)
    decoded = decode.decode_for_model(data, 384)
    assert decoded.reduction == decode.reduction_for(width, height, 384) == reduction
    assert decoded.pixels.shape[:2] == (-(-height // reduction), -(-width // reduction))
    geometry = letterbox_geometry(height, width, 384)
    assert decoded.pixels.shape[0] >= geometry.new_height and decoded.pixels.shape[1] >= geometry.new_width
    # The reduced pixels stand for reduction x reduction blocks of the full decode: close to their
    # average (compared where whole blocks fit; libjpeg scales in the DCT domain, not by averaging).
    full = decode.decode_image(data, max_pixels=1 << 30)
    rows, columns = height // reduction, width // reduction
    blocks = full[: rows * reduction, : columns * reduction].reshape(rows, reduction, columns, reduction, 3)
    average = blocks.mean(axis=(1, 3))
    assert np.abs(average - decoded.pixels[:rows, :columns]).mean() < 2


def test_a_12_mp_photo_gives_training_and_serving_the_same_tensor_and_boxes(tmp_path):
    """The parity guarantee on the DCT-scaled path: the training dataset (albumentations on the pixels
    decode_for_model gives, boxes divided by the reduction) and the handler's preprocess give identical
    tensors, and a box lands in the same place; restore_boxes brings it back to the original frame."""
    from helpers.runtime.classmap import ClassMap
    from helpers.runtime.config import FRIDGE_CLASSES
    from helpers.train.data import DetectionDataset

    data = _big_photo(4000, 3000, orientation=6)  # stored landscape, displayed portrait 3000x4000
    box = [600.0, 1000.0, 2400.0, 3600.0]  # in the displayed frame
    path = tmp_path / "12mp.jpg"
    path.write_bytes(data)
    record = Record(path, 3000, 4000, [box], ["carton"])
    tensor, target = DetectionDataset([record], ALBU_FULL, ClassMap(FRIDGE_CLASSES), 384)[0]
    decoded = decode.decode_for_model(data, 384, max_pixels=1 << 30)
    assert decoded.reduction == 8 and (decoded.height, decoded.width) == (4000, 3000)
    served, geometry = pp.preprocess(decoded)
    assert np.array_equal(tensor.numpy(), served[0])
    placed = letterbox_boxes(np.array([box]), geometry)
    assert np.abs(target["boxes"].numpy() - placed).max() < 1e-3
    assert np.abs(restore_boxes(placed, geometry) - np.array([box])).max() < 1e-6


# ---- Memory-bounded decoding (tiles, in-place conversion, views) and the checked C boundary ----------


def _whole_image_rgb(image: Image.Image, pad_fill=PREPROCESS.pad_fill) -> np.ndarray:
    """decode_for_model's mode conversion as it was on the whole image at once (the reference)."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        fill = np.asarray(pad_fill, dtype=np.float32)
        return np.rint(rgba[..., :3] * alpha + fill * (1.0 - alpha)).astype(np.uint8)
    if mode.startswith("I"):
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _every_mode(height=70, width=90):
    rng = np.random.default_rng(5)
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    deep = rng.integers(0, 65536, (height, width)).astype(np.uint16)
    return {
        "RGB": (rgba.convert("RGB"), "PNG"),
        "RGBA": (rgba, "PNG"),
        "LA": (rgba.convert("LA"), "PNG"),
        "P with transparency": (rgba.convert("RGB").quantize(50), "PNG", {"transparency": 7}),
        "P": (rgba.convert("RGB").quantize(50), "PNG"),
        "L": (rgba.convert("L"), "PNG"),
        "I;16": (Image.fromarray(deep), "PNG"),
        "I": (Image.fromarray(deep.astype(np.int32) * 3 - 20000), "TIFF"),
        "F": (Image.fromarray(rng.normal(128, 90, (height, width)).astype(np.float32)), "TIFF"),
        "CMYK": (rgba.convert("CMYK"), "TIFF"),
        "1": (rgba.convert("1"), "PNG"),
        "YCbCr": (rgba.convert("RGB").convert("YCbCr"), "TIFF"),
    }


@pytest.mark.parametrize("tile_pixels", [1 << 18, 1000, 7])
def test_every_mode_converts_as_the_whole_image_did_whatever_the_tiles(monkeypatch, tile_pixels):
    """Alpha, 16-bit, 32-bit and float grey, CMYK...: tile by tile, in place or not, the same numbers as
    the whole-image conversion (tiles of 1000 pixels: several rows; of 7: parts of a row)."""
    monkeypatch.setattr(decode, "_TILE_PIXELS", tile_pixels)
    for name, (image, fmt, *kwargs) in _every_mode().items():
        data = _encode(image, fmt, **(kwargs[0] if kwargs else {}))
        with Image.open(io.BytesIO(data)) as reference:
            expected = _whole_image_rgb(reference)
        pixels = decode.decode_image(data)
        assert pixels.shape == expected.shape and not pixels.flags.writeable, name
        assert np.array_equal(pixels, expected), name


def test_grey_stays_one_byte_per_pixel_and_rgb_alpha_are_pillows_memory():
    modes = _every_mode()
    grey = decode.decode_image(_encode(modes["I;16"][0], "PNG"))
    assert grey.strides[2] == 0 and grey.base is not None
    for name in ("RGB", "RGBA", "LA"):
        assert decode.decode_image(_encode(modes[name][0], "PNG")).strides[1:] == (4, 1), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_a_view_equal_to_exif_transpose(preprocess_path, orientation):
    from PIL import ImageOps

    rgb = np.random.default_rng(orientation).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(rgb), "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode.decode_for_model(data)
    assert np.array_equal(decoded.pixels, expected) and not decoded.pixels.flags.owndata
    assert (decoded.height, decoded.width) == expected.shape[:2]
    assert np.array_equal(pp.preprocess(decoded)[0], _albu_tensor(expected))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF", "PNG"])
def test_only_the_first_frame_of_a_multi_frame_file_is_decoded(fmt):
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((200, 10, 10), (10, 200, 10), (10, 10, 200))]
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:], **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    pixels = decode.decode_image(data)
    assert np.abs(pixels.astype(int) - [200, 10, 10]).max() <= 2  # GIF's palette may round


def test_arrow_exports_in_another_layout_are_not_read():
    """Any difference from the layouts read (format, children, length, offset, nulls, buffers) gives None."""
    image = Image.new("RGB", (7, 3))
    schema_capsule, array_capsule = image.__arrow_c_array__()
    schema = pillow_view._ArrowSchema.from_address(pillow_view._capsule_pointer(schema_capsule, b"arrow_schema"))
    array = pillow_view._ArrowArray.from_address(pillow_view._capsule_pointer(array_capsule, b"arrow_array"))
    assert pillow_view._exported_address(schema, array, 7, 3)[1] == 4
    assert pillow_view._exported_address(schema, array, 7, 4) is None  # length
    child = array.children[0].contents
    for structure, field, value in [
        (array, "offset", 1),
        (array, "null_count", 1),
        (array, "n_buffers", 2),
        (array, "n_children", 2),
        (child, "offset", 4),
        (child, "length", 83),
        (child, "n_buffers", 3),
    ]:
        original = getattr(structure, field)
        setattr(structure, field, value)
        assert pillow_view._exported_address(schema, array, 7, 3) is None, field
        setattr(structure, field, original)
    for fmt in (b"+w:3", b"+l", b"c"):  # a copy: Pillow frees the strings its own schema points to
        other = pillow_view._ArrowSchema(format=fmt, n_children=schema.n_children, children=schema.children)
        assert pillow_view._exported_address(other, array, 7, 3) is None, fmt


def test_the_kernel_refuses_arrays_of_the_wrong_type():
    """Typed ctypes arguments: a table of the wrong dtype or a read-only tensor is a Python error."""
    import ctypes

    image = np.zeros((20, 30, 3), np.uint8)
    _, geometry = pp.preprocess_numpy(image)
    tensor = np.empty((1, 3, 384, 384), np.float32)
    normalise = pp.normalisation_constants(PREPROCESS)
    kernel.letterbox_native(kernel.load_kernel(), image, geometry, tensor, normalise)  # the right types run
    with pytest.raises(ctypes.ArgumentError):
        kernel.letterbox_native(
            kernel.load_kernel(), image, geometry, tensor, tuple(a.astype(np.float64) for a in normalise)
        )
    tensor.flags.writeable = False
    with pytest.raises(ctypes.ArgumentError):
        kernel.letterbox_native(kernel.load_kernel(), image, geometry, tensor, normalise)
    with pytest.raises(ValueError, match="does not fit"):
        kernel.letterbox_native(
            kernel.load_kernel(), image, geometry, np.empty((1, 3, 100, 100), np.float32), normalise
        )


def test_overlapping_decodes_restore_pillows_block_size():
    """The block size is process-wide: two decodes that overlap (threads: the batch runner, moto's map)
    must leave it as it was whichever finishes first. Entered A, B; left A, B."""
    default = Image.core.get_block_size()
    first, second = pillow_view.one_block(), pillow_view.one_block()
    first.__enter__()
    second.__enter__()
    assert Image.core.get_block_size() >= 1 << 30
    first.__exit__(None, None, None)
    assert Image.core.get_block_size() >= 1 << 30  # the second decode is still running
    second.__exit__(None, None, None)
    assert Image.core.get_block_size() == default
