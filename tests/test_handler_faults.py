"""The handler on the tiny detector where users depend on its answers: S3 image reads that fail over
real HTTP (tests/s3_faults.py, the handler's own client with its retries and error parsing), malformed
proxy events and request limits, the settings that change what is served, and metrics off."""

import base64
import json

import pytest
from conftest import TINY_LABELS

from helpers.runtime import handler as h
from helpers.runtime import storage
from helpers.runtime.config import FRIDGE_CLASSES, MAX_DETECTIONS_LIMIT
from helpers.runtime.errors import PayloadTooLarge, S3Unavailable

IMAGE = "/photos/shelf/10.jpg"
WHERE = "s3://photos/shelf/10.jpg"


@pytest.fixture
def s3_image(faulty_s3, sample_jpegs):
    server, _ = faulty_s3
    server.objects[IMAGE] = sample_jpegs["10.jpg"]
    return server


def _init(tiny_model, **env):
    return h.init({"MODEL_PATH": str(tiny_model), "SCORE_THRESHOLD": "0", "LOG_LEVEL": "CRITICAL", **env})


@pytest.mark.parametrize(
    ("fault", "fail_first", "status", "error"),
    [
        (None, 0, 200, None),
        (None, 2, 200, None),  # two 503 SlowDown, retried by the client's standard mode, then answered
        ((404, "NoSuchKey"), 0, 404, f"{WHERE} not found"),
        ("deny", 0, 403, f"access denied to {WHERE}"),
        ((503, "ServiceUnavailable"), 0, 503, f"S3 is unavailable for {WHERE} (ServiceUnavailable); retry"),
        ((503, "SlowDown"), 0, 503, f"S3 is unavailable for {WHERE} (SlowDown); retry"),
        ((500, "InternalError"), 0, 503, f"S3 is unavailable for {WHERE} (InternalError); retry"),
        ((400, "InvalidObjectState"), 0, 500, "internal error"),  # a code outside the table: not the caller's
        ("truncate", 0, 503, f"S3 cannot be reached for {WHERE} (ResponseStreamingError); retry"),
    ],
)
def test_s3_image_faults_over_http_are_the_documented_statuses(
    s3_image, tiny_model, lambda_context, fault, fail_first, status, error
):
    _init(tiny_model)
    s3_image.fault, s3_image.fail_first = fault, fail_first
    answer = h.handler({"s3_uri": f"s3:/{IMAGE}"}, lambda_context)
    if status == 200:
        assert answer["image"] == {"width": 499, "height": 666} and len(answer["detections"]) == len(TINY_LABELS)
        assert s3_image.gets == fail_first + 1
    else:
        assert answer == {"statusCode": status, "error": error, "request_id": lambda_context.aws_request_id}


def test_an_s3_image_over_the_size_limit_is_413_and_its_body_is_not_read(s3_image, tiny_model, lambda_context):
    size = len(s3_image.objects[IMAGE])
    _init(tiny_model, MAX_IMAGE_BYTES="1000")  # S3 images may be 10x the inline limit
    answer = h.handler({"s3": {"bucket": "photos", "key": "shelf/10.jpg"}}, lambda_context)
    assert answer["statusCode"] == 413 and answer["error"] == f"{WHERE} is {size} bytes; limit 10000"


def test_an_s3_image_of_exactly_the_limit_is_read_and_one_byte_over_is_not(s3_image):
    size = len(s3_image.objects[IMAGE])
    assert storage.read_image("photos", "shelf/10.jpg", size) == s3_image.objects[IMAGE]
    with pytest.raises(PayloadTooLarge) as info:
        storage.read_image("photos", "shelf/10.jpg", size - 1)
    assert str(info.value) == f"{WHERE} is {size} bytes; limit {size - 1}"


def test_a_503_with_raise_retryable_is_raised_for_the_caller_to_retry(s3_image, tiny_model, lambda_context):
    _init(tiny_model)
    s3_image.fault = (503, "SlowDown")
    with pytest.raises(S3Unavailable, match=r"S3 is unavailable for s3://photos/shelf/10.jpg \(SlowDown\); retry"):
        h.handler({"s3_uri": f"s3:/{IMAGE}", "raise_retryable": True}, lambda_context)
    assert s3_image.gets == 4  # first the client's own try and its three retries (CLIENT_CONFIG)
    answered = h.handler({"s3_uri": f"s3:/{IMAGE}", "raise_retryable": False}, lambda_context)
    assert answered["statusCode"] == 503


def _proxy(body, **fields):
    return {"version": "2.0", "requestContext": {"http": {"method": "POST"}}, "body": body, **fields}


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (_proxy("{}", headers=["content-type"]), "headers and queryStringParameters must be JSON objects"),
        (
            _proxy("{}", headers="content-type: application/json"),
            "headers and queryStringParameters must be JSON objects",
        ),
        (
            _proxy("{}", queryStringParameters=[["threshold", "0.5"]]),
            "headers and queryStringParameters must be JSON objects",
        ),
        (_proxy("{}", queryStringParameters="threshold=0.5"), "headers and queryStringParameters must be JSON objects"),
        (
            {"image": "AAAA", "max_detections": MAX_DETECTIONS_LIMIT + 1},
            f"max_detections must be an integer in [1, {MAX_DETECTIONS_LIMIT}], got {MAX_DETECTIONS_LIMIT + 1}",
        ),
        (
            _proxy("raw", queryStringParameters={"max_detections": str(MAX_DETECTIONS_LIMIT + 1)}),
            f"max_detections must be an integer in [1, {MAX_DETECTIONS_LIMIT}], got '{MAX_DETECTIONS_LIMIT + 1}'",
        ),
        (
            {"image": "AAAA", "max_detections": 0},
            f"max_detections must be an integer in [1, {MAX_DETECTIONS_LIMIT}], got 0",
        ),
    ],
)
def test_malformed_events_and_limits_are_400_with_the_reason(tiny_handler, lambda_context, event, error):
    answer = h.handler(event, lambda_context)
    if "requestContext" in event:
        assert answer["statusCode"] == 400 and json.loads(answer["body"])["error"] == error
    else:
        assert answer["statusCode"] == 400 and answer["error"] == error


def _inline(jpeg: bytes) -> dict:
    return {"image": base64.b64encode(jpeg).decode()}


def test_max_detections_setting_caps_the_answer_and_a_request_may_ask_fewer(tiny_model, sample_jpegs, lambda_context):
    _init(tiny_model, MAX_DETECTIONS="2")
    answer = h.handler(_inline(sample_jpegs["10.jpg"]), lambda_context)
    scores = [d["score"] for d in answer["detections"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    fewer = h.handler({**_inline(sample_jpegs["10.jpg"]), "max_detections": 1}, lambda_context)
    assert fewer["detections"] == answer["detections"][:1]


@pytest.mark.parametrize(("pixels", "status"), [(499 * 666, 200), (499 * 666 - 1, 413)])
def test_max_image_pixels_is_the_largest_image_served(tiny_model, sample_jpegs, lambda_context, pixels, status):
    _init(tiny_model, MAX_IMAGE_PIXELS=str(pixels))
    answer = h.handler(_inline(sample_jpegs["10.jpg"]), lambda_context)
    assert answer.get("statusCode", 200) == status
    if status == 413:
        assert str(pixels) in answer["error"]


def test_class_map_path_in_icevision_form_names_the_labels(tiny_model, sample_jpegs, lambda_context, tmp_path):
    """How README serves the IceVision model: its class_map.json ({name: id}, background 0) names the ids."""
    names = ["a_can", "b_box", "c_jar", "d_cup"]
    class_map = tmp_path / "class_map.json"
    class_map.write_text(json.dumps({"background": 0, **{n: i + 1 for i, n in enumerate(names)}}))
    _init(tiny_model, CLASS_MAP_PATH=str(class_map))
    labels = [d["label"] for d in h.handler(_inline(sample_jpegs["10.jpg"]), lambda_context)["detections"]]
    assert sorted(labels) == sorted(names[i - 1] for i in TINY_LABELS)
    _init(tiny_model)  # without it: the names in the model's metadata
    labels = [d["label"] for d in h.handler(_inline(sample_jpegs["10.jpg"]), lambda_context)["detections"]]
    assert sorted(labels) == sorted(FRIDGE_CLASSES[i - 1] for i in TINY_LABELS)


@pytest.mark.parametrize(("namespace", "lines"), [("", 0), ("FridgeTest", 1)])
def test_metrics_off_prints_no_metric_line(tiny_model, sample_jpegs, lambda_context, capsys, namespace, lines):
    _init(tiny_model, METRICS_NAMESPACE=namespace)
    capsys.readouterr()
    h.handler(_inline(sample_jpegs["10.jpg"]), lambda_context)
    h.handler({"image": "not base64!"}, lambda_context)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    metric_lines = [line for line in printed if "_aws" in line]
    assert len(metric_lines) == 2 * lines
    assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == namespace for line in metric_lines)
