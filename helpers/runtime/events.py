"""The parse stage of the handler: every event shape it accepts -> one typed Request.

Shapes: a direct invoke {"image": base64} | {"s3": {"bucket", "key"}} | {"s3_uri": "s3://..."}, which
may add "raise_retryable": true (the batch state machine does: S3Unavailable is then raised, a Lambda
function error its Retry names, instead of a 503 answer); API
Gateway v1/v2 and Function URL proxy events, or a bare {"body", "isBase64Encoded"} event, whose body is
a JSON request as above or the raw image (query-string "threshold"/"max_detections" apply; a JSON
body's own win). No I/O here: S3 objects are read, and sizes checked, by the decode stage.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json

from helpers.runtime.config import MAX_DETECTIONS_LIMIT
from helpers.runtime.errors import RequestError
from helpers.runtime.s3uri import parse_s3_uri

REQUEST_KEYS = {"image", "s3", "s3_uri"}


@dataclasses.dataclass(frozen=True)
class Request:
    """What an event asks, whatever its shape: inline image bytes or an S3 object; None: the default."""

    image: bytes | None = None
    s3: tuple[str, str] | None = None
    threshold: float | None = None
    max_detections: int | None = None
    raise_retryable: bool = False


def _b64(text, what: str) -> bytes:
    """Standard base64 or its URL-safe alphabet (RFC 4648), ASCII whitespace removed first: MIME line
    breaks (`base64.encodebytes`, what the blog's clients sent) are common. Mixed alphabets are refused."""
    if not isinstance(text, str):
        raise RequestError(f"{what} must be a base64 string")
    compact = "".join(text.split())
    urlsafe = ("-" in compact or "_" in compact) and not ("+" in compact or "/" in compact)
    try:
        return base64.b64decode(compact, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what} is not valid base64") from None


def is_proxy(event) -> bool:
    """API Gateway v1/v2 and Function URL events, and a bare HTTP-style body ({"body", "isBase64Encoded"},
    as console test events and `sam local invoke -e` files carry it)."""
    if not isinstance(event, dict):
        return False
    if "requestContext" in event or "httpMethod" in event or event.get("version") == "2.0":
        return True
    return "body" in event and not (REQUEST_KEYS & set(event))


def _parameters(source: dict) -> dict:
    params = {}
    if (value := source.get("threshold")) is not None:
        try:
            params["threshold"] = float(value)
        except (TypeError, ValueError):
            raise RequestError(f"threshold must be a number, got {value!r}") from None
        if not 0.0 <= params["threshold"] <= 1.0:
            raise RequestError(f"threshold must be within [0, 1], got {value!r}")
    if (value := source.get("max_detections")) is not None:
        if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= MAX_DETECTIONS_LIMIT:
            raise RequestError(f"max_detections must be an integer in [1, {MAX_DETECTIONS_LIMIT}], got {value!r}")
        params["max_detections"] = int(value)
    return params


def _request(fields: dict, params: dict) -> Request:
    if "image" in fields:
        return Request(image=_b64(fields["image"], "image"), **_parameters(params))
    if "s3_uri" in fields:
        try:
            return Request(s3=parse_s3_uri(str(fields["s3_uri"])), **_parameters(params))
        except ValueError as err:
            raise RequestError(str(err)) from None
    if "s3" in fields:
        ref = fields["s3"]
        if not isinstance(ref, dict) or not ref.get("bucket") or not ref.get("key"):
            raise RequestError('"s3" must be {"bucket": ..., "key": ...}')
        return Request(s3=(str(ref["bucket"]), str(ref["key"])), **_parameters(params))
    raise RequestError('request needs "image" (base64), "s3" {"bucket", "key"} or "s3_uri"')


def parse(event) -> Request:
    """Any supported event shape -> Request; RequestError for anything malformed."""
    if not isinstance(event, dict):
        raise RequestError("event must be a JSON object")
    if not is_proxy(event):
        if not (REQUEST_KEYS & set(event)):
            raise RequestError(
                'unrecognised event: expected {"image": base64} or an S3 reference or an HTTP (API Gateway/Function URL) event'
            )
        retry = event.get("raise_retryable", False)
        if not isinstance(retry, bool):
            raise RequestError(f"raise_retryable must be true or false, got {retry!r}")
        return dataclasses.replace(_request(event, event), raise_retryable=retry)
    body = event.get("body")
    if body is None or body == "":
        raise RequestError("empty body: send a JSON request or the image bytes")
    if not isinstance(body, str):
        raise RequestError("body must be a string (JSON, or base64 with isBase64Encoded)")
    raw = _b64(body, "body") if event.get("isBase64Encoded") else body.encode("utf-8", "surrogateescape")
    headers, query = event.get("headers") or {}, event.get("queryStringParameters") or {}
    if not isinstance(headers, dict) or not isinstance(query, dict):
        raise RequestError("headers and queryStringParameters must be JSON objects")
    headers = {str(k).lower(): str(v) for k, v in headers.items()}
    if headers.get("content-type", "").startswith("application/json") or raw[:1] == b"{":
        try:
            fields = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestError("body is not valid JSON") from None
        if not isinstance(fields, dict):
            raise RequestError("JSON body must be an object")
        return _request(fields, {**query, **fields})
    return Request(image=raw, **_parameters(query))
