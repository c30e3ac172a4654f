"""The Lambda handler: every event shape and every malformed request on a tiny ONNX detector built in
the session (no training: `make test-fast` runs them), and the real exported model where its answers
are what is tested."""

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from helpers.export.compare import match_detections
from helpers.export.onnx_export import prepare_for_serving
from helpers.runtime import errors, events, kernel, settings
from helpers.runtime import handler as h
from helpers.runtime.config import DEFAULT_SCORE_THRESHOLD, MAX_IMAGE_BYTES
from helpers.runtime.decode import decode_image
from helpers.runtime.detections import Detections
from helpers.runtime.postprocess import restore_boxes
from helpers.runtime.preprocess import preprocess
from helpers.train.module import load_checkpoint

THRESHOLD = 0.0  # the real fixture model keeps every detection (min_score=0)


@pytest.fixture(scope="module")
def real_state(onnx_model):
    return h.State({"MODEL_PATH": str(onnx_model), "SCORE_THRESHOLD": str(THRESHOLD), "LOG_LEVEL": "WARNING"})


@pytest.fixture
def state(real_state, monkeypatch):
    """The handler serving the real model in this test (loaded once per module)."""
    monkeypatch.setattr(h, "_STATE", real_state)
    return real_state


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


def _png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of width x height: a few hundred kB that would decode to width*height
    pixels (written with zlib directly: Pillow would first allocate all of them)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    pixels = zlib.compressobj(9)
    data = b"".join(pixels.compress(row) for _ in range(height)) + pixels.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _body(out: dict) -> dict:
    return json.loads(out["body"]) if "body" in out else out


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


# ---- the real model --------------------------------------------------------------------------------


def test_detections_equal_the_pytorch_model(state, trained, sample_records, lambda_context):
    module = load_checkpoint(trained.checkpoint)
    prepare_for_serving(module.model, THRESHOLD)  # as the fixture's export did
    compared = 0
    for record in sample_records:
        data = record.image_path.read_bytes()
        out = h.handler({"image": _b64(data)}, lambda_context)
        assert out["image"] == {"width": 499, "height": 666}
        tensor, geometry = preprocess(decode_image(data), module.preprocess)
        with torch.no_grad():
            raw = module.model([torch.from_numpy(tensor[0])])[0]
        boxes = restore_boxes(raw["boxes"].numpy(), geometry)
        area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        eager = Detections(boxes[area], raw["scores"].numpy()[area], raw["labels"].numpy()[area])
        ours = Detections.from_json(out["detections"], state.detector.class_map)
        # 0.005 px of rounding plus ORT-vs-torch float error scaled by 666/side (1/0.577 at 384) to original pixels
        pairs, _, _ = match_detections(ours, eager, max_distance=0.02)
        # A quick-mode Faster R-CNN reshuffles a few percent of its boxes through RPN top-k near-ties
        # (see helpers.export.compare.parity): most, not all, must pair up.
        assert len(pairs) >= 0.8 * max(len(ours), len(eager))
        for i, j in pairs:
            a, b = torch.tensor(ours.boxes[i : i + 1]), torch.tensor(eager.boxes[j : j + 1])
            if (a[0, 2:] - a[0, :2]).min() >= 2:  # IoU >= 0.99 holds from ~2 px up at 0.01 px rounding
                assert float(box_iou(a, b)) >= 0.99
        compared += len(pairs)
        assert set(out["timings_ms"]) == {"decode", "preprocess", "inference", "postprocess", "total"}
        json.dumps(out)
    assert compared > 0


def _stored_sideways(image: Image.Image, save, orientation: int | None = 6) -> bytes:
    """The image stored rotated 90° counter-clockwise with EXIF orientation 6 ("rotate 90° CW to
    display"): a viewer that honours EXIF shows the original."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    return save(image.transpose(Image.Transpose.ROTATE_90), exif=exif)


def test_exif_rotated_jpeg_keeps_the_real_models_boxes_in_the_displayed_frame(state, sample_records, lambda_context):
    # The JPEG a phone writes: re-encoding moves a quick model's boxes (some a lot), but they stay in
    # the displayed frame: most still overlap the upright image's.
    record = sample_records[0]
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


# ---- the tiny detector: the request table ----------------------------------------------------------


def test_the_tiny_detector_tells_images_apart(tiny_handler, sample_jpegs, lambda_context):
    """What the tests below rely on: every box at threshold 0, scores that depend on the image."""
    answers = [h.handler({"image": _b64(data)}, lambda_context)["detections"] for data in sample_jpegs.values()]
    assert all(len(a) == 5 for a in answers)
    assert len({tuple(d["score"] for d in a) for a in answers}) == len(sample_jpegs)


@pytest.mark.parametrize(
    "make_event",
    [
        pytest.param(lambda data: http_v2(json.dumps({"image": _b64(data)})), id="http-v2-json"),
        pytest.param(lambda data: rest_v1(json.dumps({"image": _b64(data)})), id="rest-v1-json"),
        pytest.param(lambda data: http_v2(_b64(data), True, "image/jpeg"), id="function-url-binary"),
        pytest.param(lambda data: rest_v1(_b64(data), True, "image/jpeg"), id="rest-v1-binary"),
        pytest.param(lambda data: {"image": base64.encodebytes(data).decode()}, id="mime-base64"),  # the blog's
        pytest.param(lambda data: {"image": base64.urlsafe_b64encode(data).decode()}, id="urlsafe-base64"),
        pytest.param(lambda data: {"body": json.dumps({"image": _b64(data)})}, id="body-only-json"),  # console
        pytest.param(lambda data: {"body": _b64(data), "isBase64Encoded": True}, id="body-only-binary"),
    ],
)
def test_every_event_shape_gives_the_same_answer(tiny_handler, sample_jpegs, lambda_context, make_event):
    expected = h.handler({"image": _b64(sample_jpegs["12.jpg"])}, lambda_context)["detections"]
    other = h.handler({"image": _b64(sample_jpegs["13.jpg"])}, lambda_context)["detections"]
    out = h.handler(make_event(sample_jpegs["12.jpg"]), lambda_context)
    if "statusCode" in out:
        assert out["statusCode"] == 200 and out["headers"]["content-type"] == "application/json"
        out = json.loads(out["body"])
    assert out["detections"] == expected != other


def test_per_request_threshold_and_max_detections(tiny_handler, sample_jpegs, lambda_context):
    data = _b64(sample_jpegs["10.jpg"])
    everything = h.handler({"image": data, "threshold": 0.0}, lambda_context)["detections"]
    assert len(everything) == 5
    top = h.handler({"image": data, "threshold": 0.0, "max_detections": 1}, lambda_context)["detections"]
    assert top == everything[:1]
    cut = (everything[2]["score"] + everything[3]["score"]) / 2  # between two scores, not on a rounded one
    assert h.handler({"image": data, "threshold": cut}, lambda_context)["detections"] == everything[:3]
    assert h.handler({"image": data, "threshold": 1.0}, lambda_context)["detections"] == []


def test_threshold_and_max_detections_from_the_query_string(tiny_handler, sample_jpegs, lambda_context):
    data = sample_jpegs["10.jpg"]
    everything = h.handler({"image": _b64(data), "threshold": 0.0}, lambda_context)["detections"]
    scores = [d["score"] for d in everything]
    cut = (scores[1] + scores[2]) / 2  # between two scores: rounding in the response cannot matter

    def raw_image(query):
        out = h.handler(http_v2(_b64(data), is_base64=True, content_type="image/jpeg", query=query), lambda_context)
        return out["statusCode"], json.loads(out["body"])

    status, body = raw_image({"threshold": str(cut)})
    assert status == 200 and body["detections"] == everything[:2]
    status, body = raw_image({"threshold": "0", "max_detections": "1"})
    assert status == 200 and body["detections"] == everything[:1]
    # A JSON body's own value wins over the query string's.
    out = h.handler(
        http_v2(json.dumps({"image": _b64(data), "threshold": 0.0}), query={"threshold": "1"}), lambda_context
    )
    assert json.loads(out["body"])["detections"] == everything
    status, body = raw_image({"threshold": "high"})
    assert status == 400 and "threshold must be a number" in body["error"]


@pytest.mark.parametrize(
    "model_threshold, env_threshold, request_threshold, served",
    [
        (None, None, None, DEFAULT_SCORE_THRESHOLD),
        (0.7, None, None, 0.7),
        (0.7, "0.2", None, 0.2),
        (0.7, "0.2", 0.6, 0.6),
        (0.7, None, 0.1, 0.1),
    ],
    ids=["default", "model-metadata", "env-over-model", "request-over-env", "request-over-model"],
)
def test_threshold_precedence_request_env_model_default(
    make_tiny_model, sample_jpegs, lambda_context, model_threshold, env_threshold, request_threshold, served
):
    env = {"MODEL_PATH": str(make_tiny_model(model_threshold)), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""}
    state = h.init({**env, "SCORE_THRESHOLD": env_threshold} if env_threshold else env)
    assert state.detector.contract.score_threshold == model_threshold
    image = _b64(sample_jpegs["10.jpg"])
    everything = h.handler({"image": image, "threshold": 0.0}, lambda_context)["detections"]
    request = {"image": image} if request_threshold is None else {"image": image, "threshold": request_threshold}
    detections = h.handler(request, lambda_context)["detections"]
    assert detections == [d for d in everything if d["score"] >= served]
    # scores 0.85, 0.68, 0.52, 0.35, 0.15: each threshold of the table keeps a different number
    assert len(detections) == {0.1: 5, 0.2: 4, 0.5: 3, 0.6: 2, 0.7: 1}[served]


def test_exif_rotation_gives_the_displayed_frame(tiny_handler, sample_records, lambda_context):
    pixels = Image.fromarray(decode_image(sample_records[0].image_path.read_bytes()))
    upright = h.handler({"image": _b64(_png(pixels))}, lambda_context)
    # Lossless (PNG carries EXIF too): displayed upright, the stored-sideways image is the same pixels,
    # so the same boxes in the same (displayed) frame; without the tag, the stored frame.
    rotated = h.handler({"image": _b64(_stored_sideways(pixels, _png))}, lambda_context)
    untagged = h.handler({"image": _b64(_stored_sideways(pixels, _png, orientation=None))}, lambda_context)
    assert rotated["image"] == upright["image"] == {"width": 499, "height": 666}
    assert rotated["detections"] == upright["detections"]
    assert untagged["image"] == {"width": 666, "height": 499} and untagged["detections"] != upright["detections"]
    jpeg = _stored_sideways(Image.open(sample_records[0].image_path), lambda im, **kw: _jpeg(im, quality=95, **kw))
    assert h.handler({"image": _b64(jpeg)}, lambda_context)["image"] == {"width": 499, "height": 666}


BAD_REQUESTS = [
    # (id, event from a real JPEG's bytes, status, the error message)
    (
        "truncated-jpeg",
        lambda jpeg: {"image": _b64(jpeg[: len(jpeg) // 2])},
        400,
        "cannot decode image: image file is truncated (89 bytes not processed)",
    ),
    (
        "random-bytes",
        lambda _: {"image": _b64(np.random.default_rng(0).bytes(5000))},
        400,
        "not a recognised image format",
    ),
    ("empty-body", lambda _: http_v2(""), 400, "empty body: send a JSON request or the image bytes"),
    ("empty-image", lambda _: {"image": ""}, 400, "empty image"),
    ("not-base64", lambda _: {"image": "%%%not base64%%%"}, 400, "image is not valid base64"),
    ("mixed-base64-alphabets", lambda jpeg: {"image": _b64(jpeg)[:-8] + "-_+/AAAA"}, 400, "image is not valid base64"),
    (
        "base64-with-junk-in-lines",
        lambda jpeg: {"image": base64.encodebytes(jpeg).decode().replace("\n", "\n#", 1)},
        400,
        "image is not valid base64",
    ),
    (
        "body-only-empty",
        lambda _: {"body": "", "isBase64Encoded": False},
        400,
        "empty body: send a JSON request or the image bytes",
    ),
    ("body-only-bad-base64", lambda _: {"body": "%%%", "isBase64Encoded": True}, 400, "body is not valid base64"),
    (
        "body-not-a-string",
        lambda _: {"body": 12, "isBase64Encoded": False},
        400,
        "body must be a string (JSON, or base64 with isBase64Encoded)",
    ),
    ("image-not-string", lambda _: {"image": 12}, 400, "image must be a base64 string"),
    ("bad-json", lambda _: http_v2("{not json"), 400, "body is not valid JSON"),
    ("json-array", lambda _: http_v2("[1, 2]"), 400, "JSON body must be an object"),
    ("text-body", lambda jpeg: http_v2(jpeg.hex(), content_type="text/plain"), 400, "not a recognised image format"),
    (
        "missing-keys",
        lambda _: {"picture": "abc"},
        400,
        'unrecognised event: expected {"image": base64} or an S3 reference or an HTTP (API Gateway/Function URL) event',
    ),
    ("unknown-shape", lambda _: ["not", "an", "object"], 400, "event must be a JSON object"),
    (
        "http-missing-image",
        lambda _: http_v2(json.dumps({"threshold": 0.5})),
        400,
        'request needs "image" (base64), "s3" {"bucket", "key"} or "s3_uri"',
    ),
    (
        "bad-threshold",
        lambda jpeg: {"image": _b64(jpeg), "threshold": "high"},
        400,
        "threshold must be a number, got 'high'",
    ),
    (
        "threshold-out-of-range",
        lambda jpeg: {"image": _b64(jpeg), "threshold": 3},
        400,
        "threshold must be within [0, 1], got 3",
    ),
    (
        "bad-max-detections",
        lambda jpeg: {"image": _b64(jpeg), "max_detections": -1},
        400,
        "max_detections must be an integer in [1, 10000], got -1",
    ),
    (
        "bool-max-detections",
        lambda jpeg: {"image": _b64(jpeg), "max_detections": True},
        400,
        "max_detections must be an integer in [1, 10000], got True",
    ),
    ("bad-s3-uri", lambda _: {"s3_uri": "https://bucket/key"}, 400, "not an s3://bucket/key URI: 'https://bucket/key'"),
    ("bad-s3-ref", lambda _: {"s3": {"bucket": "b"}}, 400, '"s3" must be {"bucket": ..., "key": ...}'),
    (
        "png-bomb-8000x8000",
        lambda _: {"image": _b64(_png_bomb(8000, 8000))},
        413,
        "image is 8000x8000 = 64000000 pixels; limit 40000000",
    ),
    (
        "over-6mb-body",
        lambda _: http_v2(_b64(b"\xff" * (MAX_IMAGE_BYTES + 10)), is_base64=True, content_type="image/jpeg"),
        413,
        "image is 6291466 bytes; limit 6291456 (send large images by S3 reference)",
    ),
    (
        "over-6mb-image",
        lambda _: {"image": _b64(b"\xff" * (MAX_IMAGE_BYTES + 10))},
        413,
        "image is 6291466 bytes; limit 6291456 (send large images by S3 reference)",
    ),
]


@pytest.mark.parametrize("make_event, status, message", [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS])
def test_bad_request_is_a_json_error_with_its_status(
    tiny_handler, sample_jpegs, lambda_context, make_event, status, message
):
    out = h.handler(make_event(sample_jpegs["10.jpg"]), lambda_context)
    body = _body(out)
    assert out["statusCode"] == status, out
    assert body["request_id"] == "req-123"
    assert body["error"] == message
    assert "Traceback" not in json.dumps(out)


def test_blank_image_gets_an_empty_answer_not_an_error(tiny_handler, lambda_context):
    out = h.handler({"image": _b64(_png(Image.new("RGB", (640, 480), "white")))}, lambda_context)
    assert "error" not in out and out["image"] == {"width": 640, "height": 480}


@pytest.mark.parametrize("mode", ["CMYK", "LA", "I;16", "P", "RGBA"])
def test_unusual_modes_are_served(tiny_handler, sample_jpegs, lambda_context, mode):
    rgb = Image.open(io.BytesIO(sample_jpegs["11.jpg"])).convert("RGB")
    if mode == "CMYK":
        data = _jpeg(rgb.convert("CMYK"))
    elif mode == "I;16":
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        data = _png(Image.fromarray(grey))
        assert Image.open(io.BytesIO(data)).mode.startswith("I")
    else:
        data = _png(rgb.convert(mode))
    out = h.handler({"image": _b64(data)}, lambda_context)
    assert "error" not in out, out
    assert out["image"] == {"width": 499, "height": 666} and len(out["detections"]) == 5
    if mode == "RGBA":  # fully opaque: exactly the RGB answer
        assert out["detections"] == h.handler({"image": _b64(_png(rgb))}, lambda_context)["detections"]


def test_unexpected_errors_are_500_without_details(tiny_handler, sample_jpegs, lambda_context, monkeypatch, capsys):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(tiny_handler.detector, "predict", explode)
    out = h.handler({"image": _b64(sample_jpegs["10.jpg"])}, lambda_context)
    assert out == {"statusCode": 500, "error": "internal error", "request_id": "req-123"}
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(e.get("request_id") == "req-123" and "secret internal detail" in e.get("exception", "") for e in logged)


def test_an_init_failing_in_a_request_is_a_json_500_and_the_next_request_tries_again(
    tiny_model, sample_jpegs, lambda_context, monkeypatch, capsys
):
    for name in ("MODEL_PATH", "MODEL_S3_URI", "MODEL_BUCKET", "MODEL_KEY", "SCORE_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL_PATH", "/nonexistent/model.onnx")
    event = http_v2(json.dumps({"image": _b64(sample_jpegs["10.jpg"])}))
    out = h.handler(event, lambda_context)
    assert out["statusCode"] == 500 and json.loads(out["body"]) == {"error": "internal error", "request_id": "req-123"}
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any("ConfigError: MODEL_PATH: no file at" in e.get("exception", "") for e in logged), logged
    assert h._STATE is None
    monkeypatch.setenv("MODEL_PATH", str(tiny_model))
    monkeypatch.setenv("METRICS_NAMESPACE", "")
    out = h.handler(event, lambda_context)
    assert out["statusCode"] == 200 and len(json.loads(out["body"])["detections"]) == 3  # the default 0.5


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("++8=", b"\xfb\xef"),  # the standard alphabet
        ("//8=", b"\xff\xff"),
        ("--8=", b"\xfb\xef"),  # the URL-safe one, told apart by either of its two characters
        ("__8=", b"\xff\xff"),
        ("-_8=", b"\xfb\xff"),
        (" ++8\n= ", b"\xfb\xef"),  # whitespace (MIME line breaks) is dropped
    ],
)
def test_base64_in_either_alphabet_decodes_to_the_same_bytes(text, data):
    assert events.parse({"image": text}) == events.Request(image=data)
    assert events.parse(http_v2(text, is_base64=True, content_type="image/jpeg")) == events.Request(image=data)


def test_a_raw_body_decoded_with_surrogateescape_gives_back_the_image_bytes(sample_jpegs):
    """A client that turned the JPEG's bytes into text with surrogateescape (its non-UTF-8 bytes as lone
    surrogates, which JSON carries) without isBase64Encoded: the encode reverses it byte for byte."""
    jpeg = sample_jpegs["10.jpg"]
    assert events.parse(http_v2(jpeg.decode("utf-8", "surrogateescape"), content_type="image/jpeg")) == events.Request(
        image=jpeg
    )


@pytest.mark.parametrize(
    ("event", "proxy"),
    [
        ({"requestContext": {}, "body": "x"}, True),  # API Gateway v1/v2
        ({"requestContext": {}, "image": "eA=="}, True),  # requestContext alone marks it
        ({"httpMethod": "POST", "body": "x", "image": "eA=="}, True),  # v1's own key: its body is the request
        ({"version": "2.0", "image": "eA=="}, True),
        ({"body": "x"}, True),  # a bare HTTP-style body (console test events)
        ({"body": "x", "image": "eA=="}, False),  # a direct request that also carries "body"
        ({"version": "1.0", "image": "eA=="}, False),
        ({"image": "eA=="}, False),
        ("body", False),
    ],
)
def test_which_events_are_http_proxy_events(event, proxy):
    assert events.is_proxy(event) is proxy


@pytest.mark.parametrize(
    ("event", "parsed"),
    [
        ({"image": "eA==", "threshold": 0, "max_detections": 10_000}, events.Request(b"x", None, 0.0, 10_000)),
        ({"image": "eA==", "threshold": "1", "max_detections": "1"}, events.Request(b"x", None, 1.0, 1)),
        ({"s3_uri": "s3://b/k/1.jpg", "threshold": 0.5}, events.Request(s3=("b", "k/1.jpg"), threshold=0.5)),
        ({"s3": {"bucket": "b", "key": 7}, "max_detections": 2}, events.Request(s3=("b", "7"), max_detections=2)),
        ({"s3": {"bucket": "b", "key": "k"}, "raise_retryable": True}, events.Request(s3=("b", "k"), raise_retryable=True)),
        # A JSON body with a header of any case (and a leading space), the query string under the body's own.
        (
            {"requestContext": {}, "headers": {"Content-Type": "application/json; charset=utf-8"},
             "queryStringParameters": {"threshold": "0.9", "max_detections": "4"},
             "body": ' {"s3_uri": "s3://b/k", "threshold": 0.1}'},
            events.Request(s3=("b", "k"), threshold=0.1, max_detections=4),
        ),
        ({"version": "2.0", "body": "raw", "queryStringParameters": {"max_detections": "3"}}, events.Request(b"raw", max_detections=3)),
    ],
)  # fmt: skip
def test_each_event_shape_is_parsed_into_its_request(event, parsed):
    assert events.parse(event) == parsed


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"image": "eA==", "threshold": 1.01}, "threshold must be within [0, 1], got 1.01"),
        ({"image": "eA==", "threshold": -0.01}, "threshold must be within [0, 1], got -0.01"),
        ({"image": "eA==", "threshold": [0.5]}, "threshold must be a number, got [0.5]"),
        ({"image": "eA==", "max_detections": 0}, "max_detections must be an integer in [1, 10000], got 0"),
        ({"image": "eA==", "max_detections": 10_001}, "max_detections must be an integer in [1, 10000], got 10001"),
        ({"image": "eA==", "max_detections": "2.0"}, "max_detections must be an integer in [1, 10000], got '2.0'"),
        ({"s3": "b/k"}, '"s3" must be {"bucket": ..., "key": ...}'),
        ({"s3": {"key": "k"}}, '"s3" must be {"bucket": ..., "key": ...}'),
        ({"s3": {"bucket": "b", "key": ""}}, '"s3" must be {"bucket": ..., "key": ...}'),
        ({"s3_uri": "s3://b/"}, "not an s3://bucket/key URI: 's3://b/'"),
        ({"image": "eA==", "raise_retryable": "yes"}, "raise_retryable must be true or false, got 'yes'"),
        ({"image": "eA==", "raise_retryable": 1}, "raise_retryable must be true or false, got 1"),
        ({"version": "2.0", "body": None}, "empty body: send a JSON request or the image bytes"),
        ({"requestContext": {}}, "empty body: send a JSON request or the image bytes"),  # a proxy event, not unrecognised
        ({"image": "eA-+"}, "image is not valid base64"),  # mixed alphabets, one character of each
        ({"image": "eA_/"}, "image is not valid base64"),
        ({"version": "2.0", "body": "{}", "queryStringParameters": "a=1"}, "headers and queryStringParameters must be JSON objects"),
        ({"version": "2.0", "body": "{}"}, 'request needs "image" (base64), "s3" {"bucket", "key"} or "s3_uri"'),
        ({"version": "2.0", "body": "[]", "headers": {"content-type": "application/json"}}, "JSON body must be an object"),
        ({"version": "2.0", "body": "{", "headers": {"CONTENT-TYPE": "application/json"}}, "body is not valid JSON"),
    ],
)  # fmt: skip
def test_each_malformed_event_is_refused_with_its_reason(event, message):
    with pytest.raises(errors.RequestError) as info:
        events.parse(event)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "error, status",
    [
        (errors.RequestError("bad"), 400),
        (errors.ImageError("cannot decode"), 400),
        (errors.S3Forbidden("no"), 403),
        (errors.S3NotFound("gone"), 404),
        (errors.PayloadTooLarge("big"), 413),
        (errors.ImageTooLarge("pixels"), 413),  # an ImageError: the nearest class in the table decides
        (errors.S3Unavailable("retry"), 503),
        (errors.ConfigError("MODEL_PATH"), 500),
        (KeyError("image"), 500),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None,
)
def test_the_status_table(error, status):
    assert errors.status_of(error) == status


S3 = {"MODEL_S3_URI": "s3://b/k"}
SHA = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "set MODEL_PATH, MODEL_S3_URI or MODEL_BUCKET + MODEL_KEY"),
        ({"MODEL_PATH": "/nonexistent/model.onnx"}, "MODEL_PATH: no file at /nonexistent/model.onnx"),
        ({"MODEL_S3_URI": "bucket/key"}, "MODEL_S3_URI: not an s3://bucket/key URI: 'bucket/key'"),
        ({"MODEL_BUCKET": "b"}, "MODEL_KEY is required with MODEL_BUCKET"),
        ({"MODEL_KEY": "k"}, "MODEL_BUCKET is required with MODEL_KEY"),
        ({**S3, "SCORE_THRESHOLD": "abc"}, "SCORE_THRESHOLD must be float, got 'abc'"),
        ({**S3, "SCORE_THRESHOLD": "1.5"}, "SCORE_THRESHOLD must be within [0.0, 1.0], got '1.5'"),
        ({**S3, "SCORE_THRESHOLD": "-0.1"}, "SCORE_THRESHOLD must be within [0.0, 1.0], got '-0.1'"),
        ({**S3, "MAX_DETECTIONS": "0"}, "MAX_DETECTIONS must be within [1, 10000], got '0'"),
        ({**S3, "MAX_DETECTIONS": "10001"}, "MAX_DETECTIONS must be within [1, 10000], got '10001'"),
        ({**S3, "MAX_IMAGE_PIXELS": "lots"}, "MAX_IMAGE_PIXELS must be int, got 'lots'"),
        ({**S3, "MAX_IMAGE_PIXELS": "1000000001"}, "MAX_IMAGE_PIXELS must be within [1, 1000000000], got '1000000001'"),
        ({**S3, "MAX_IMAGE_BYTES": "0"}, "MAX_IMAGE_BYTES must be within [1, 1073741824], got '0'"),
        ({**S3, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be DEBUG/INFO/WARNING/ERROR/CRITICAL, got 'LOUD'"),
        ({**S3, "MODEL_SHA256": "xyz"}, "MODEL_SHA256 must be 64 lowercase hex digits"),
        ({**S3, "MODEL_SHA256": SHA.upper()}, "MODEL_SHA256 must be 64 lowercase hex digits"),
        ({**S3, "MODEL_SHA256": SHA + "0"}, "MODEL_SHA256 must be 64 lowercase hex digits"),
        ({**S3, "MODEL_SHA256": "X" * 64}, "MODEL_SHA256 must be 64 lowercase hex digits"),  # a template's placeholder
    ],
)
def test_bad_configuration_names_the_variable(env, message):
    with pytest.raises(errors.ConfigError) as info:
        settings.Settings(env)
    assert str(info.value) == message


DEFAULTS = {
    "score_threshold": None,  # the model's metadata decides
    "max_detections": 100,
    "max_image_pixels": 40_000_000,
    "max_image_bytes": 6 * 1024 * 1024,
    "log_level": "INFO",
    "model_sha256": None,
    "cache_dir": Path("/tmp"),
    "class_map_path": None,
    "metrics_namespace": "FridgeDetector",
    "model_path": None,
    "model_s3": ("b", "k"),
}


@pytest.mark.parametrize(
    "env, changed",
    [
        (S3, {}),
        ({**S3, "SCORE_THRESHOLD": "", "MAX_DETECTIONS": "", "MODEL_SHA256": "", "CLASS_MAP_PATH": ""}, {}),
        (
            {
                "MODEL_BUCKET": "models",
                "MODEL_KEY": "fridge/model.onnx",
                "SCORE_THRESHOLD": "1",
                "MAX_DETECTIONS": "10000",
                "MAX_IMAGE_PIXELS": "1000000000",
                "MAX_IMAGE_BYTES": "1073741824",
                "LOG_LEVEL": "debug",
                "MODEL_SHA256": SHA,
                "MODEL_CACHE_DIR": "/var/cache",
                "CLASS_MAP_PATH": "class_map.json",
                "METRICS_NAMESPACE": "",
            },
            {
                "model_s3": ("models", "fridge/model.onnx"),
                "score_threshold": 1.0,
                "max_detections": 10_000,
                "max_image_pixels": 1_000_000_000,
                "max_image_bytes": 1 << 30,
                "log_level": "DEBUG",
                "model_sha256": SHA,
                "cache_dir": Path("/var/cache"),
                "class_map_path": "class_map.json",
                "metrics_namespace": "",
            },
        ),
        ({**S3, "SCORE_THRESHOLD": "0", "MAX_DETECTIONS": "1", "MAX_IMAGE_PIXELS": "1", "MAX_IMAGE_BYTES": "1"},
         {"score_threshold": 0.0, "max_detections": 1, "max_image_pixels": 1, "max_image_bytes": 1}),
        # A relative MODEL_PATH is inside the unzipped package, and wins over an S3 location.
        ({**S3, "MODEL_PATH": "helpers/runtime/settings.py"},
         {"model_path": settings.PACKAGE_ROOT / "helpers" / "runtime" / "settings.py", "model_s3": None}),
    ],
)  # fmt: skip
def test_valid_configuration_is_read_with_its_defaults(env, changed):
    assert vars(settings.Settings(env)) == {**DEFAULTS, **changed}


def test_a_12_mp_photo_is_decoded_reduced_and_answered_in_its_own_frame(tiny_handler, lambda_context):
    """A 4000x3000 phone-size JPEG is decoded at 1/8 in the DCT domain (decode_for_model); the response
    still speaks of the original: its size, and boxes in its pixels, as the same photo at 1/8 scale gives
    them multiplied by 8 (up to the 0.01 px rounding of the response and the ceil of the last block)."""
    from helpers.measure.benchmark.measure import synthetic_photo

    big = synthetic_photo(12)
    out = h.handler({"image": _b64(big)}, lambda_context)
    assert out["image"] == {"width": 4000, "height": 3000} and out["detections"]
    boxes = np.array([d["box"] for d in out["detections"]])
    assert (boxes[:, 0::2] <= 4000).all() and (boxes[:, 1::2] <= 3000).all() and (boxes >= 0).all()
    small = Image.open(io.BytesIO(big))
    small.draft(None, (500, 375))  # the same DCT-scaled pixels, handed over as a small PNG
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "PNG")
    reduced = h.handler({"image": _b64(buffer.getvalue())}, lambda_context)
    assert reduced["image"] == {"width": 500, "height": 375}
    assert [d["label"] for d in reduced["detections"]] == [d["label"] for d in out["detections"]]
    assert [d["score"] for d in reduced["detections"]] == [d["score"] for d in out["detections"]]  # same pixels
    scaled = np.array([d["box"] for d in reduced["detections"]]) * 8
    assert np.abs(np.minimum(scaled, [4000, 3000, 4000, 3000]) - boxes).max() < 0.1


def test_init_loads_the_letterbox_kernel_and_fails_on_one_that_cannot_load(tiny_model, monkeypatch, tmp_path, capsys):
    env = {"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "INFO", "METRICS_NAMESPACE": ""}
    kernel.load_kernel.cache_clear()
    h.init(env)
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [e["letterbox_kernel"] for e in logged if e.get("message") == "initialised"] == [True]
    broken = tmp_path / "_letterbox_kernel.so"
    broken.write_bytes(b"\x7fELF not really")  # e.g. a zip assembled by hand for another architecture
    monkeypatch.setattr(kernel, "KERNEL_PATH", broken)
    kernel.load_kernel.cache_clear()
    with pytest.raises(OSError, match="letterbox kernel _letterbox_kernel.so does not load .*rebuild the zip"):
        h.init(env)
    kernel.load_kernel.cache_clear()  # the real kernel again for the tests that follow


def test_the_served_threshold_is_the_request_then_the_environment_then_the_model_then_the_default():
    from helpers.runtime.contract import served_threshold

    assert served_threshold(0.1, 0.2, 0.3) == 0.1
    assert served_threshold(None, 0.2, 0.3) == 0.2
    assert served_threshold(None, None, 0.3) == 0.3
    assert served_threshold(None, None, None) == DEFAULT_SCORE_THRESHOLD
    assert served_threshold(0.0, 0.2, None) == 0.0  # a threshold of 0 is a threshold, not "unset"


def test_s3_uris_of_an_object_and_of_a_prefix():
    from helpers.runtime.s3uri import parse_s3_prefix, parse_s3_uri

    assert parse_s3_uri("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    for bad in ("s3://bucket", "s3://bucket/", "s3:///key", "https://bucket/key"):
        with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
            parse_s3_uri(bad)
    assert parse_s3_prefix("s3://bucket") == ("bucket", "")
    assert parse_s3_prefix("s3://bucket/images/") == ("bucket", "images/")
    for bad in ("s3://", "s3:///images", "bucket/images"):
        with pytest.raises(ValueError, match="not an S3 location"):
            parse_s3_prefix(bad)
