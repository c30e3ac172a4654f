"""A faithful re-creation of the blog post's Lambda pre/postprocessing, defects included.

Kept only as the baseline that tests (regressions), notebook 03 and the benchmark compare against.
Do not use it for serving: see helpers.runtime for the corrected code.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from helpers.runtime.detections import Detections
from helpers.runtime.geometry import Letterbox
from helpers.runtime.postprocess import to_detections


def resize_and_pad(img: Image.Image, image_size: int):
    """Blog: int() for the short side, nearest-neighbour resize, zero padding."""
    resize_factor = min(image_size / img.width, image_size / img.height)
    if img.width > img.height:
        resize_target = (image_size, int(img.height * resize_factor))
    else:
        resize_target = (int(img.width * resize_factor), image_size)
    img = img.resize(resize_target, resample=0)
    if img.width == image_size:
        padded_pixel = image_size - img.height
    else:
        padded_pixel = image_size - img.width
    if padded_pixel % 2 != 0:
        pad_1 = (padded_pixel - 1) // 2
        pad_2 = pad_1 + 1
    else:
        pad_1 = padded_pixel // 2
        pad_2 = pad_1
    if img.width == image_size:
        arr = np.pad(np.array(img), [[pad_1, pad_2], [0, 0], [0, 0]], constant_values=0)
        paddings = [pad_1 + pad_2, 0]
    else:
        arr = np.pad(np.array(img), [[0, 0], [pad_1, pad_2], [0, 0]], constant_values=0)
        paddings = [0, pad_1 + pad_2]
    return arr, resize_factor, paddings


def normalize(img, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), max_pixel_value=255.0):
    """Blog: float64 arithmetic per channel."""
    return np.stack(
        [(img[:, :, c] - mean[c] * max_pixel_value) / (std[c] * max_pixel_value) for c in range(3)],
        axis=-1,
    )


def convert_to_pytorch_input(img: np.ndarray) -> np.ndarray:
    return np.transpose(np.expand_dims(img, 0), [0, 3, 1, 2]).astype(np.float32)


def preprocess(img: Image.Image, image_size: int = 384):
    arr, resize_factor, paddings = resize_and_pad(img, image_size)
    return convert_to_pytorch_input(normalize(arr)), resize_factor, paddings


def geometry(height: int, width: int, paddings, image_size: int) -> Letterbox:
    """Where resize_and_pad put the image, from its `paddings` (total vertical, total horizontal): its
    truncated size, the odd pixel of padding after it."""
    vertical, horizontal = paddings
    return Letterbox(height, width, image_size - vertical, image_size - horizontal, vertical // 2, horizontal // 2)


def detect(detector, image: np.ndarray, score_threshold: float, max_detections: int) -> Detections:
    """Our model behind the blog's preprocessing, its boxes mapped back with the correct geometry of the
    blog's resize and pad: what the preprocessing alone costs (the blog's box bug left out)."""
    tensor, _, paddings = preprocess(Image.fromarray(image), detector.config.image_size)
    placed = geometry(*image.shape[:2], paddings, detector.config.image_size)
    boxes, scores, labels = detector.session.run(detector.output_names, {detector.input_name: tensor})
    return to_detections(boxes, scores, labels, placed, score_threshold, max_detections)


def resize_bboxes(resize_factor: float, paddings, bbox):
    """Blog: paddings is [vertical_total, horizontal_total] but index 0 is subtracted from x."""
    return [
        (bbox[0] - paddings[0] / 2) / resize_factor,
        (bbox[1] - paddings[1] / 2) / resize_factor,
        (bbox[2] - paddings[0] / 2) / resize_factor,
        (bbox[3] - paddings[1] / 2) / resize_factor,
    ]


def postprocess(result, resize_factor, paddings, class_map: dict, detection_threshold: float = 0.5):
    """Blog's handler loop: the threshold argument is ignored (0.5 hard-coded), class_map is the
    IceVision {name: id} dict indexed by id, and numpy floats reach json.dumps."""
    del detection_threshold  # read from the environment by the blog, then never used
    payload = []
    for idx in range(len(result[0])):
        if result[1][idx] >= 0.5:
            payload.append(
                {
                    "bbox": resize_bboxes(resize_factor, paddings, result[0][idx]),
                    "score": result[1][idx],
                    "label": class_map[result[2][idx]],
                }
            )
    return json.dumps(payload).encode()
