"""The Lambda handler on real images and a real exported model, and every malformed request."""

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from helpers.evaluate.metrics import detections_to_arrays
from helpers.export.compare import match_detections
from helpers.runtime import handler as h
from helpers.runtime import preprocess as pp
from helpers.runtime.config import DEFAULT_SCORE_THRESHOLD, MAX_IMAGE_BYTES
from helpers.runtime.postprocess import restore_boxes
from helpers.runtime.preprocess import decode_image, preprocess
from helpers.train.models import set_serving_thresholds
from helpers.train.run import load_checkpoint

THRESHOLD = 0.0  # the fixture model keeps every detection (min_score=0)


@pytest.fixture(scope="module")
def state(onnx_model):
    return h.init({"MODEL_PATH": str(onnx_model), "SCORE_THRESHOLD": str(THRESHOLD), "LOG_LEVEL": "WARNING"})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def http_v2(body, is_base64=False, content_type="application/json", query=None):
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "headers": {"content-type": content_type},
        "queryStringParameters": query,
        "requestContext": {"http": {"method": "POST", "path": "/"}, "requestId": "abc"},
        "body": body,
        "isBase64Encoded": is_base64,
    }


def rest_v1(body, is_base64=False, content_type="application/json"):
    return {
        "resource": "/detect",
        "path": "/detect",
        "httpMethod": "POST",
        "headers": {"Content-Type": content_type},
        "queryStringParameters": None,
        "requestContext": {"resourcePath": "/detect", "httpMethod": "POST"},
        "body": body,
        "isBase64Encoded": is_base64,
    }


def test_detections_equal_the_pytorch_model(state, trained, sample_records, lambda_context):
    module = load_checkpoint(trained["checkpoint"])
    set_serving_thresholds(module.model, THRESHOLD)  # as the fixture's export did
    compared = 0
    for record in sample_records:
        data = record.image_path.read_bytes()
        out = h.handler({"image": _b64(data)}, lambda_context)
        assert out["image"] == {"width": 499, "height": 666}
        tensor, geometry = preprocess(decode_image(data))
        with torch.no_grad():
            raw = module.model([torch.from_numpy(tensor[0])])[0]
        boxes = restore_boxes(raw["boxes"].numpy(), geometry)
        area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        eager = {"boxes": boxes[area], "scores": raw["scores"].numpy()[area], "labels": raw["labels"].numpy()[area]}
        ours = detections_to_arrays(out["detections"], state.detector.class_map)
        # 0.005 px of rounding plus ORT-vs-torch float error scaled by 1/0.577 to original pixels
        pairs, _, _ = match_detections(ours, eager, max_distance=0.02)
        # A quick-mode Faster R-CNN reshuffles a few percent of its boxes through RPN top-k near-ties
        # (see helpers.export.compare.parity): most, not all, must pair up.
        assert len(pairs) >= 0.8 * max(len(ours["scores"]), len(eager["scores"]))
        for i, j in pairs:
            a, b = torch.tensor(ours["boxes"][i : i + 1]), torch.tensor(eager["boxes"][j : j + 1])
            if (a[0, 2:] - a[0, :2]).min() >= 2:  # IoU >= 0.99 holds from ~2 px up at 0.01 px rounding
                assert float(box_iou(a, b)) >= 0.99
        compared += len(pairs)
        assert set(out["timings_ms"]) == {"decode", "preprocess", "inference", "postprocess", "total"}
        json.dumps(out)
    assert compared > 0


@pytest.mark.parametrize(
    "make_event",
    [
        lambda data: {"image": _b64(data)},
        lambda data: http_v2(json.dumps({"image": _b64(data)})),
        lambda data: rest_v1(json.dumps({"image": _b64(data)})),
        lambda data: http_v2(_b64(data), is_base64=True, content_type="image/jpeg"),
        lambda data: rest_v1(_b64(data), is_base64=True, content_type="image/jpeg"),
        lambda data: {"image": base64.encodebytes(data).decode()},  # MIME lines, as the blog's clients sent
        lambda data: {"image": base64.urlsafe_b64encode(data).decode()},
        lambda data: {"body": json.dumps({"image": _b64(data)}), "isBase64Encoded": False},  # console test event
        lambda data: {"body": _b64(data), "isBase64Encoded": True},
    ],
    ids=[
        "direct",
        "http-v2-json",
        "rest-v1-json",
        "function-url-binary",
        "rest-v1-binary",
        "mime-base64",
        "urlsafe-base64",
        "body-only-json",
        "body-only-binary",
    ],
)
def test_every_event_shape_gives_the_same_answer(state, sample_jpegs, lambda_context, make_event):
    data = sample_jpegs["12.jpg"]
    expected = h.handler({"image": _b64(data)}, lambda_context)["detections"]
    out = h.handler(make_event(data), lambda_context)
    if "statusCode" in out:
        assert out["statusCode"] == 200 and out["headers"]["content-type"] == "application/json"
        out = json.loads(out["body"])
    assert out["detections"] == expected


def test_per_request_threshold_and_max_detections(state, sample_jpegs, lambda_context):
    data = _b64(sample_jpegs["10.jpg"])
    everything = h.handler({"image": data, "threshold": 0.0}, lambda_context)["detections"]
    assert len(everything) >= 2
    top = h.handler({"image": data, "threshold": 0.0, "max_detections": 1}, lambda_context)["detections"]
    assert top == everything[:1]
    assert h.handler({"image": data, "threshold": 1.0}, lambda_context)["detections"] == []
    query = http_v2(sample_jpegs["10.jpg"].hex(), content_type="text/plain")  # not an image
    assert h.handler(query, lambda_context)["statusCode"] == 400


def _stored_sideways(image: Image.Image, save) -> bytes:
    """The image stored rotated 90° counter-clockwise with EXIF orientation 6 ("rotate 90° CW to
    display"): a viewer that honours EXIF shows the original."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(image.transpose(Image.Transpose.ROTATE_90), exif=exif)


def test_exif_rotated_image_gets_boxes_in_the_displayed_frame(state, sample_records, lambda_context):
    record = sample_records[0]
    pixels = Image.fromarray(decode_image(record.image_path.read_bytes()))
    upright = h.handler({"image": _b64(_png(pixels)), "threshold": 0.0}, lambda_context)
    # Lossless (PNG carries EXIF too): displayed upright, the stored-sideways image is the same pixels,
    # so the same boxes in the same (displayed) frame; ignoring the tag would give a 666x499 frame.
    lossless = h.handler({"image": _b64(_stored_sideways(pixels, _png)), "threshold": 0.0}, lambda_context)
    assert lossless["image"] == upright["image"] == {"width": 499, "height": 666}
    assert len(upright["detections"]) > 0 and lossless["detections"] == upright["detections"]
    # The JPEG a phone writes: re-encoding moves a quick model's boxes (some a lot), but they stay in
    # the displayed frame: most still overlap the upright image's.
    jpeg = h.handler(
        {
            "image": _b64(
                _stored_sideways(Image.open(record.image_path), lambda im, **kw: _jpeg(im, quality=95, **kw))
            ),
            "threshold": DEFAULT_SCORE_THRESHOLD,
        },
        lambda_context,
    )
    served = h.handler(
        {"image": _b64(record.image_path.read_bytes()), "threshold": DEFAULT_SCORE_THRESHOLD}, lambda_context
    )
    assert jpeg["image"] == {"width": 499, "height": 666} and len(served["detections"]) > 0
    iou = box_iou(
        torch.tensor([d["box"] for d in served["detections"]]),
        torch.tensor([d["box"] for d in jpeg["detections"]]).reshape(-1, 4),
    )
    assert (iou.max(dim=1).values > 0.5).float().mean() >= 0.5, iou  # measured 5/6 for the quick model


def test_threshold_and_max_detections_from_the_query_string(state, sample_jpegs, lambda_context):
    data = sample_jpegs["10.jpg"]
    everything = h.handler({"image": _b64(data), "threshold": 0.0}, lambda_context)["detections"]
    scores = sorted({d["score"] for d in everything}, reverse=True)
    assert len(scores) >= 3
    cut = (scores[1] + scores[2]) / 2  # between two scores: rounding in the response cannot matter

    def raw_image(query):
        out = h.handler(http_v2(_b64(data), is_base64=True, content_type="image/jpeg", query=query), lambda_context)
        return out["statusCode"], json.loads(out["body"])

    status, body = raw_image({"threshold": str(cut)})
    assert status == 200 and body["detections"] == [d for d in everything if d["score"] >= cut]
    assert 0 < len(body["detections"]) < len(everything)
    status, body = raw_image({"threshold": "0", "max_detections": "1"})
    assert status == 200 and body["detections"] == everything[:1]
    # A JSON body's own value wins over the query string's.
    out = h.handler(
        http_v2(json.dumps({"image": _b64(data), "threshold": 0.0}), query={"threshold": "1"}), lambda_context
    )
    assert json.loads(out["body"])["detections"] == everything
    status, body = raw_image({"threshold": "high"})
    assert status == 400 and "threshold must be a number" in body["error"]


def _cases(sample_jpegs):
    jpeg = sample_jpegs["10.jpg"]
    bomb = _png(Image.new("1", (30000, 30000)))
    return [
        ("truncated-jpeg", {"image": _b64(jpeg[: len(jpeg) // 2])}, 400, "cannot decode"),
        ("random-bytes", {"image": _b64(np.random.default_rng(0).bytes(5000))}, 400, "not a recognised image"),
        ("empty-body", http_v2(""), 400, "empty body"),
        ("empty-image", {"image": ""}, 400, "empty image"),
        ("not-base64", {"image": "%%%not base64%%%"}, 400, "not valid base64"),
        ("mixed-base64-alphabets", {"image": _b64(jpeg)[:-8] + "-_+/AAAA"}, 400, "not valid base64"),
        (
            "base64-with-junk-in-lines",
            {"image": base64.encodebytes(jpeg).decode().replace("\n", "\n#", 1)},
            400,
            "not valid base64",
        ),
        ("body-only-empty", {"body": "", "isBase64Encoded": False}, 400, "empty body"),
        ("body-only-bad-base64", {"body": "%%%", "isBase64Encoded": True}, 400, "not valid base64"),
        ("image-not-string", {"image": 12}, 400, "base64 string"),
        ("bad-json", http_v2("{not json"), 400, "not valid JSON"),
        ("json-array", http_v2("[1, 2]"), 400, "not valid JSON|must be an object|request needs"),
        ("missing-keys", {"picture": "abc"}, 400, "unrecognised event"),
        ("unknown-shape", ["not", "an", "object"], 400, "JSON object"),
        ("http-missing-image", http_v2(json.dumps({"threshold": 0.5})), 400, "request needs"),
        ("bad-threshold", {"image": _b64(jpeg), "threshold": "high"}, 400, "threshold must be a number"),
        ("threshold-out-of-range", {"image": _b64(jpeg), "threshold": 3}, 400, "within"),
        ("bad-max-detections", {"image": _b64(jpeg), "max_detections": -1}, 400, "max_detections"),
        ("bad-s3-uri", {"s3_uri": "https://bucket/key"}, 400, "s3://"),
        ("bad-s3-ref", {"s3": {"bucket": "b"}}, 400, "bucket"),
        ("png-bomb-30000x30000", {"image": _b64(bomb)}, 413, "too large|pixels"),
        (
            "over-6mb-body",
            http_v2(_b64(b"\xff" * (MAX_IMAGE_BYTES + 10)), is_base64=True, content_type="image/jpeg"),
            413,
            "limit",
        ),
        ("over-6mb-image", {"image": _b64(b"\xff" * (MAX_IMAGE_BYTES + 10))}, 413, "limit"),
    ]


def test_bad_inputs_table(state, sample_jpegs, lambda_context):
    for name, event, status, message in _cases(sample_jpegs):
        out = h.handler(event, lambda_context)
        body = json.loads(out["body"]) if "body" in out else out
        assert out["statusCode"] == status, (name, out)
        assert body["request_id"] == "req-123", name
        assert re.search(message, body["error"]), (name, body["error"])
        assert "Traceback" not in json.dumps(out), name


def test_blank_image_gets_an_empty_answer_not_an_error(state, lambda_context):
    out = h.handler({"image": _b64(_png(Image.new("RGB", (640, 480), "white")))}, lambda_context)
    assert "error" not in out and out["image"] == {"width": 640, "height": 480}


@pytest.mark.parametrize("mode", ["CMYK", "LA", "I;16", "P", "RGBA"])
def test_unusual_modes_are_served(state, sample_jpegs, lambda_context, mode):
    rgb = Image.open(io.BytesIO(sample_jpegs["11.jpg"])).convert("RGB")
    if mode == "CMYK":
        data = _jpeg(rgb.convert("CMYK"))
    elif mode == "I;16":
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        data = _png(Image.fromarray(grey))
        assert Image.open(io.BytesIO(data)).mode.startswith("I")
    else:
        data = _png(rgb.convert(mode))
    out = h.handler({"image": _b64(data), "threshold": 0.0}, lambda_context)
    assert "error" not in out, out
    assert out["image"] == {"width": 499, "height": 666} and isinstance(out["detections"], list)
    if mode == "RGBA":  # fully opaque: exactly the RGB answer
        assert (
            out["detections"] == h.handler({"image": _b64(_png(rgb)), "threshold": 0.0}, lambda_context)["detections"]
        )


def test_unexpected_errors_are_500_without_details(state, sample_jpegs, lambda_context, monkeypatch, capsys):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(state.detector, "predict", explode)
    out = h.handler({"image": _b64(sample_jpegs["10.jpg"])}, lambda_context)
    assert out == {"statusCode": 500, "error": "internal error", "request_id": "req-123"}
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(e.get("request_id") == "req-123" and "secret internal detail" in e.get("exception", "") for e in logged)


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "set MODEL_PATH"),
        ({"MODEL_PATH": "/nonexistent/model.onnx"}, "MODEL_PATH"),
        ({"MODEL_S3_URI": "bucket/key"}, "MODEL_S3_URI"),
        ({"MODEL_BUCKET": "b"}, "MODEL_KEY"),
        ({"MODEL_KEY": "k"}, "MODEL_BUCKET"),
        ({"MODEL_S3_URI": "s3://b/k", "SCORE_THRESHOLD": "abc"}, "SCORE_THRESHOLD"),
        ({"MODEL_S3_URI": "s3://b/k", "SCORE_THRESHOLD": "1.5"}, "SCORE_THRESHOLD"),
        ({"MODEL_S3_URI": "s3://b/k", "MAX_DETECTIONS": "0"}, "MAX_DETECTIONS"),
        ({"MODEL_S3_URI": "s3://b/k", "MAX_IMAGE_PIXELS": "lots"}, "MAX_IMAGE_PIXELS"),
        ({"MODEL_S3_URI": "s3://b/k", "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"MODEL_S3_URI": "s3://b/k", "MODEL_SHA256": "xyz"}, "MODEL_SHA256"),
    ],
)
def test_bad_configuration_names_the_variable(env, message):
    with pytest.raises(h.ConfigError, match=message):
        h.Settings(env)


def test_a_12_mp_photo_is_decoded_reduced_and_answered_in_its_own_frame(state, lambda_context):
    """A 4000x3000 phone-size JPEG is decoded at 1/8 in the DCT domain (decode_for_model); the response
    still speaks of the original: its size, and boxes in its pixels, as the same photo at 1/8 scale gives
    them multiplied by 8 (up to the 0.01 px rounding of the response and the ceil of the last block)."""
    from helpers.tools.benchmark import synthetic_photo

    big = synthetic_photo(12)
    out = h.handler({"image": _b64(big), "threshold": 0.0}, lambda_context)
    assert out["image"] == {"width": 4000, "height": 3000} and out["detections"]
    boxes = np.array([d["box"] for d in out["detections"]])
    assert (boxes[:, 0::2] <= 4000).all() and (boxes[:, 1::2] <= 3000).all() and (boxes >= 0).all()
    small = Image.open(io.BytesIO(big))
    small.draft(None, (500, 375))  # the same DCT-scaled pixels, handed over as a small PNG
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "PNG")
    reduced = h.handler({"image": _b64(buffer.getvalue()), "threshold": 0.0}, lambda_context)
    assert reduced["image"] == {"width": 500, "height": 375}
    assert [d["label"] for d in reduced["detections"]] == [d["label"] for d in out["detections"]]
    scaled = np.array([d["box"] for d in reduced["detections"]]) * 8
    assert np.abs(np.minimum(scaled, [4000, 3000, 4000, 3000]) - boxes).max() < 0.1


def test_init_loads_the_letterbox_kernel_and_fails_on_one_that_cannot_load(onnx_model, monkeypatch, tmp_path, capsys):
    env = {"MODEL_PATH": str(onnx_model), "LOG_LEVEL": "INFO", "METRICS_NAMESPACE": ""}
    pp.kernel.cache_clear()
    h.init(env)
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [e["letterbox_kernel"] for e in logged if e.get("message") == "initialised"] == [True]
    broken = tmp_path / "_letterbox_kernel.so"
    broken.write_bytes(b"\x7fELF not really")  # e.g. a zip assembled by hand for another architecture
    monkeypatch.setattr(pp, "KERNEL_PATH", broken)
    pp.kernel.cache_clear()
    with pytest.raises(OSError, match="letterbox kernel _letterbox_kernel.so does not load .*rebuild the zip"):
        h.init(env)
    pp.kernel.cache_clear()  # the real kernel again for the tests that follow
