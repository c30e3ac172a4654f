"""The handler against random events (hypothesis): whatever arrives — JSON-like values, proxy events
with random headers, bodies and base64, real and broken images — the answer is JSON with a message,
never a 5xx and never a traceback. S3 references are answered from a stand-in for the object read (no
network here; S3 itself is tested over HTTP in test_handler_faults.py and against moto in test_handler_s3.py)."""

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.data.dataset import SAMPLE_DIR
from helpers.runtime import handler, storage
from helpers.runtime.errors import RequestError, S3NotFound
from helpers.runtime.events import is_proxy, parse

JPEG = (SAMPLE_DIR / "images" / "10.jpg").read_bytes()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
image_bytes = st.sampled_from([JPEG, JPEG[: len(JPEG) // 3], b"", b"GIF89a"]) | st.binary(max_size=200)
base64_text = image_bytes.map(lambda b: base64.b64encode(b).decode()) | st.text(max_size=60)
request_values = {
    "image": base64_text | json_like,
    "s3_uri": st.text(max_size=30) | json_like,
    "s3": json_like,
    "threshold": json_like | st.floats(-2, 2),
    "max_detections": json_like | st.integers(-5, 20_000),
}
direct_events = st.fixed_dictionaries({}, optional=request_values) | json_like
bodies = (
    base64_text
    | st.builds(lambda fields: json.dumps(fields), st.fixed_dictionaries({}, optional=request_values))
    | json_like
)
keys = st.sampled_from(["shelf/10.jpg", "missing.png"]) | st.text(min_size=1, max_size=20).filter(
    lambda k: not k.endswith("/")
)
buckets = st.text(min_size=1, max_size=8).filter(lambda b: "/" not in b)
s3_options = {
    "threshold": json_like | st.floats(-2, 2),
    "max_detections": json_like | st.integers(-5, 20_000),
    "raise_retryable": st.booleans() | json_like,
}
s3_refs = st.fixed_dictionaries(
    {"s3": st.fixed_dictionaries({"bucket": buckets, "key": keys})}
) | st.fixed_dictionaries({"s3_uri": st.builds(lambda b, k: f"s3://{b}/{k}", buckets, keys)})
s3_events = st.builds(lambda ref, options: {**ref, **options}, s3_refs, st.fixed_dictionaries({}, optional=s3_options))
proxy_events = st.fixed_dictionaries(
    {"body": bodies},
    optional={
        "isBase64Encoded": json_like | st.booleans(),
        "headers": st.dictionaries(st.sampled_from(["content-type", "Content-Type", "x"]), st.text(max_size=30))
        | json_like,
        "queryStringParameters": st.fixed_dictionaries(
            {}, optional={"threshold": st.text(max_size=6), "max_detections": st.text(max_size=6)}
        )
        | json_like,
        "requestContext": json_like,
        "version": st.just("2.0"),
    },
)


def _asks_for_s3(event) -> bool:
    try:
        return parse(event).s3 is not None
    except RequestError:
        return False


def _check_answer(event, answer) -> None:
    if is_proxy(event):  # an HTTP answer: the payload is its JSON body
        status, payload = answer["statusCode"], json.loads(answer["body"])
    else:
        status, payload = answer.get("statusCode", 200), answer
    json.dumps(answer)  # JSON-safe whatever the shape
    assert status < 500, (event, answer)
    if status != 200:
        assert isinstance(payload["error"], str) and payload["error"] and "Traceback" not in payload["error"]
    else:
        assert isinstance(payload["detections"], list)


def _s3_object(bucket: str, key: str, limit: int) -> bytes:
    """S3 without the network: a key ending in .jpg is the sample photo, any other is not there."""
    READS.append((bucket, key))
    if key.endswith(".jpg"):
        return JPEG
    raise S3NotFound(f"s3://{bucket}/{key} not found")


READS: list = []


@FUZZ
@given(event=direct_events | proxy_events | s3_events)
def test_random_events_get_json_with_a_message_never_a_5xx(tiny_handler, monkeypatch, event):
    monkeypatch.setattr(storage, "read_image", _s3_object)
    READS.clear()
    answer = handler.handler(event, None)
    _check_answer(event, answer)
    if _asks_for_s3(event):  # a valid reference is read, not refused on the way
        assert len(READS) == 1, (event, answer)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ref=s3_refs)
def test_every_valid_s3_reference_is_read_and_answered(tiny_handler, monkeypatch, ref):
    monkeypatch.setattr(storage, "read_image", _s3_object)
    READS.clear()
    answer = handler.handler(ref, None)
    bucket, key = parse(ref).s3
    assert READS == [(bucket, key)]
    if key.endswith(".jpg"):
        assert answer["image"] == {"width": 499, "height": 666} and isinstance(answer["detections"], list)
    else:
        assert answer == {"statusCode": 404, "error": f"s3://{bucket}/{key} not found", "request_id": "local"}
