"""Perturbations of the bundled real JPEGs map their boxes onto the same object (checked on the pixels),
the EXIF-rotated file decodes to the original pixels in the served decoder, and the robustness table
runs end to end with the tiny ONNX detector (no training)."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers.data.dataset import load_sample, object_photos
from helpers.data.empty import empty_crops, write_crops
from helpers.evaluate import robustness as rb
from helpers.evaluate.metrics import threshold_sweep
from helpers.runtime.decode import decode_for_model
from helpers.runtime.model import Detector


@pytest.fixture(scope="module")
def records():
    return load_sample() + object_photos()[::20]


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(rb.upright(data), dtype=np.float64)


def crop(image: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return image[y0:y1, x0:x1]


def test_mirroring_twice_is_the_identity_and_the_box_holds_the_mirrored_object(records):
    for record in records:
        data = record.image_path.read_bytes()
        once = rb.mirrored(data, record.boxes)
        twice = rb.mirrored(rb.upright(once.data), once.boxes)
        assert twice.boxes == record.boxes
        assert np.array_equal(pixels(twice.data), pixels(data))
        for box, mirrored_box in zip(record.boxes, once.boxes):
            assert np.array_equal(crop(pixels(once.data), mirrored_box), crop(pixels(data), box)[:, ::-1])


def moved_box_error(image: Image.Image, box, original: np.ndarray, dx: float, dy: float) -> float:
    """Mean absolute difference between `original` and `image`'s crop at `box` moved by (dx, dy) box
    sizes, resized to the original's size."""
    x0, y0, x1, y1 = box
    moved = (x0 + dx * (x1 - x0), y0 + dy * (y1 - y0), x1 + dx * (x1 - x0), y1 + dy * (y1 - y0))
    resized = image.crop(moved).resize((original.shape[1], original.shape[0]), Image.Resampling.BILINEAR)
    return float(np.abs(np.asarray(resized, np.float64) - original).mean())


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_scaled_box_covers_the_same_object(records, factor):
    """The scaled image's crop at the scaled box, brought back to the original box's size, matches the
    original crop better than the same box moved by a tenth of its size in any of 8 directions."""
    for record in records:
        data = record.image_path.read_bytes()
        perturbed = rb.scaled(factor)(data, record.boxes)
        image = rb.upright(perturbed.data)
        assert image.size == (round(record.width * factor), round(record.height * factor))
        for box, scaled_box in zip(record.boxes, perturbed.boxes):
            original = crop(pixels(data), box)
            here = moved_box_error(image, scaled_box, original, 0, 0)
            for dx, dy in [(dx, dy) for dx in (-0.1, 0, 0.1) for dy in (-0.1, 0, 0.1) if dx or dy]:
                assert here < moved_box_error(image, scaled_box, original, dx, dy), (
                    record.image_path.name,
                    box,
                    dx,
                    dy,
                )


def test_brightness_scales_the_pixels_and_keeps_the_boxes(records):
    data = records[0].image_path.read_bytes()
    for factor in (0.6, 1.4):
        perturbed = rb.brightness(factor)(data, records[0].boxes)
        assert perturbed.boxes == records[0].boxes
        expected = np.clip(pixels(data) * factor, 0, 255)
        assert np.abs(pixels(perturbed.data) - expected).max() <= 1


def test_low_quality_jpeg_is_a_lossy_jpeg_of_the_same_image(records):
    data = records[0].image_path.read_bytes()
    perturbed = rb.jpeg(20)(data, records[0].boxes)
    assert perturbed.boxes == records[0].boxes
    assert Image.open(io.BytesIO(perturbed.data)).format == "JPEG"
    assert len(perturbed.data) < len(rb.jpeg(95)(data, records[0].boxes).data)
    difference = np.abs(pixels(perturbed.data) - pixels(data))
    assert 0 < difference.mean() < 10


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_decodes_to_the_original_pixels_in_the_served_decoder(records, orientation):
    data = records[0].image_path.read_bytes()
    perturbed = rb.exif_rotated(orientation)(data, records[0].boxes)
    assert perturbed.boxes == records[0].boxes
    served = decode_for_model(perturbed.data, None)
    assert np.array_equal(served.pixels, decode_for_model(data, None).pixels)
    assert (served.width, served.height) == (records[0].width, records[0].height)
    with Image.open(io.BytesIO(perturbed.data)) as stored:  # a decoder that ignores EXIF: on its side
        swapped = orientation in (6, 8)
        assert stored.size == (
            (records[0].height, records[0].width) if swapped else (records[0].width, records[0].height)
        )
        assert not np.array_equal(np.asarray(stored.convert("RGB")), np.asarray(ImageOps.exif_transpose(stored)))


def test_the_table_runs_with_the_tiny_detector_on_real_images(records, tiny_model, tmp_path):
    detector = Detector(tiny_model)
    threshold = 0.5
    detect = rb.served(detector, threshold)
    empty = write_crops(empty_crops(load_sample()), tmp_path / "empty")
    table = rb.robustness(detect, records, detector.class_map, threshold, empty)
    assert [r.perturbation for r in table.rows] == list(rb.PERTURBATIONS)
    for row in table.rows:
        assert row.images == len(records) and row.boxes == sum(len(r.boxes) for r in records)
        assert 0 <= row.found <= row.boxes and row.false >= 0
        assert row.recall == pytest.approx(row.found / row.boxes)
        assert row.precision == pytest.approx(row.found / (row.found + row.false) if row.found + row.false else 1.0)
    # The clean row is the served pipeline's own threshold sweep on the original files.
    predictions = [detect(r.image_path.read_bytes()) for r in records]
    targets = [
        {"boxes": np.asarray(r.boxes).reshape(-1, 4), "labels": np.array([detector.class_map.id(n) for n in r.labels])}
        for r in records
    ]
    sweep = threshold_sweep(predictions, targets, [threshold])[0]
    clean = table.row("clean")
    assert (clean.found, clean.false, clean.recall, clean.precision) == (
        sweep["found"],
        sweep["false"],
        sweep["recall"],
        sweep["precision"],
    )
    # The served decoder undoes the EXIF rotation: the model sees the clean pixels.
    rotated = table.row("exif-rotated (6)")
    assert (rotated.found, rotated.false) == (clean.found, clean.false)
    # The tiny detector answers with the same boxes everywhere: every one is false on an empty image.
    e = table.empty
    assert e.images == len(empty) >= 20 and e.false == sum(e.counts) == sum(
        len(detect(r.image_path.read_bytes())) for r in empty
    )
    assert e.per_image.estimate == pytest.approx(e.false / e.images)
    assert e.per_image.low <= e.per_image.estimate <= e.per_image.high
    assert set(table.recall_drops()) == set(rb.PERTURBATIONS) - {"clean"}
    text = rb.format_table(table)
    assert all(name in text for name in rb.PERTURBATIONS) and "per image" in text
