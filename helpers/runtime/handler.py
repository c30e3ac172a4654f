"""AWS Lambda entry point: `helpers.runtime.handler.handler`.

Configuration (environment, validated once at cold start; a bad value fails init naming the variable):
  MODEL_PATH        model file inside the package (relative to the package root) or absolute, or
  MODEL_S3_URI      s3://bucket/key, or MODEL_BUCKET + MODEL_KEY: downloaded once to MODEL_CACHE_DIR
  MODEL_SHA256      optional; verifies the model (and skips the download when /tmp already has it)
  CLASS_MAP_PATH    optional class_map.json for models without metadata (IceVision form accepted)
  SCORE_THRESHOLD   default 0.5        MAX_DETECTIONS   default 100 (at most 10000)
  MAX_IMAGE_PIXELS  default 40000000   MAX_IMAGE_BYTES  default 6291456 (S3 images: 10x that)
  LOG_LEVEL         default INFO       MODEL_CACHE_DIR  default /tmp
  METRICS_NAMESPACE default FridgeDetector: CloudWatch metrics (Embedded Metric Format, one line per
                    request, dimension Model); empty turns them off
(defaults and limits: helpers.runtime.config)

Requests (all may add "threshold" and "max_detections"):
  direct invoke         {"image": "<base64>"}  |  {"s3": {"bucket": ..., "key": ...}}  |  {"s3_uri": "s3://..."}
  API Gateway v1/v2 and Function URL proxy events, or a bare {"body", "isBase64Encoded"} event: a JSON
  body as above, or the raw image as the body (binary, isBase64Encoded honoured); "threshold" may also
  come from the query string. Base64 may be standard or URL-safe, with line breaks.

Response (200): {"detections": [{"label", "score", "box": [x1, y1, x2, y2]}], "image": {"width",
  "height"}, "model": "<name>", "timings_ms": {"decode", "preprocess", "inference", "postprocess",
  "total"}}; boxes in original image pixels (after EXIF rotation). Errors: {"error": "<message>",
  "request_id": "..."} with 400 (bad JSON/base64/image/parameter), 413 (too large), 403/404 (S3),
  503 (S3 unreachable or failing: retry), 500 (unexpected; details only in the log). Proxy events
  get {statusCode, headers, body}; direct invocations get the JSON object itself with "statusCode"
  added on errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from helpers.runtime import emf
from helpers.runtime.checksum import sha256_file
from helpers.runtime.config import (
    DEFAULT_MAX_DETECTIONS,
    DEFAULT_SCORE_THRESHOLD,
    MAX_DETECTIONS_LIMIT,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    S3_IMAGE_BYTES_FACTOR,
)
from helpers.runtime.model import Detector
from helpers.runtime.preprocess import ImageError, ImageTooLarge, decode_for_model, kernel

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the unzipped deployment package
DEFAULT_METRICS_NAMESPACE = "FridgeDetector"


class ConfigError(RuntimeError):
    """A bad environment variable: raised at init so the function fails to start, clearly."""


class RequestError(Exception):
    status = 400


class PayloadTooLarge(RequestError):
    status = 413


class S3Forbidden(RequestError):
    status = 403


class S3NotFound(RequestError):
    status = 404


class S3Unavailable(RequestError):
    """S3 could not be reached or answered with a server error: worth retrying, not the client's fault."""

    status = 503


def _status_of(err: Exception) -> int:
    """The one place where domain errors become HTTP status codes."""
    if isinstance(err, ImageTooLarge):
        return 413
    if isinstance(err, ImageError):
        return 400
    if isinstance(err, RequestError):
        return err.status
    return 500


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {"level": record.levelname, "message": record.getMessage(), "logger": record.name}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StdoutHandler(logging.Handler):
    """One JSON line per record to the current sys.stdout (CloudWatch reads the function's stdout)."""

    def emit(self, record):
        print(self.format(record), file=sys.stdout, flush=True)


def _logger(level: str) -> logging.Logger:
    logger = logging.getLogger("helpers.handler")
    if not logger.handlers:
        stdout = _StdoutHandler()
        stdout.setFormatter(_JsonFormatter())
        logger.addHandler(stdout)
        logger.propagate = False
    logger.setLevel(level)
    return logger


def _number(env, name, default, kind, low, high):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind.__name__}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be within [{low}, {high}], got {raw!r}")
    return value


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


class Settings:
    def __init__(self, env=os.environ):
        self.score_threshold = _number(env, "SCORE_THRESHOLD", DEFAULT_SCORE_THRESHOLD, float, 0.0, 1.0)
        self.max_detections = _number(env, "MAX_DETECTIONS", DEFAULT_MAX_DETECTIONS, int, 1, MAX_DETECTIONS_LIMIT)
        self.max_image_pixels = _number(env, "MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, int, 1, 1_000_000_000)
        self.max_image_bytes = _number(env, "MAX_IMAGE_BYTES", MAX_IMAGE_BYTES, int, 1, 1 << 30)
        self.log_level = env.get("LOG_LEVEL", "INFO").upper()
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG/INFO/WARNING/ERROR/CRITICAL, got {self.log_level!r}")
        self.model_sha256 = env.get("MODEL_SHA256") or None
        if self.model_sha256 and (
            len(self.model_sha256) != 64 or not all(c in "0123456789abcdef" for c in self.model_sha256)
        ):
            raise ConfigError("MODEL_SHA256 must be 64 lowercase hex digits")
        self.cache_dir = Path(env.get("MODEL_CACHE_DIR", "/tmp"))
        self.class_map_path = env.get("CLASS_MAP_PATH") or None
        self.metrics_namespace = env.get("METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE)
        self.model_path, self.model_s3 = None, None
        if env.get("MODEL_PATH"):
            path = Path(env["MODEL_PATH"])
            self.model_path = path if path.is_absolute() else PACKAGE_ROOT / path
            if not self.model_path.is_file():
                raise ConfigError(f"MODEL_PATH: no file at {self.model_path}")
        elif env.get("MODEL_S3_URI"):
            try:
                self.model_s3 = parse_s3_uri(env["MODEL_S3_URI"])
            except ValueError as err:
                raise ConfigError(f"MODEL_S3_URI: {err}") from None
        elif env.get("MODEL_BUCKET") or env.get("MODEL_KEY"):
            if not (env.get("MODEL_BUCKET") and env.get("MODEL_KEY")):
                given, missing = (
                    ("MODEL_BUCKET", "MODEL_KEY") if env.get("MODEL_BUCKET") else ("MODEL_KEY", "MODEL_BUCKET")
                )
                raise ConfigError(f"{missing} is required with {given}")
            self.model_s3 = (env["MODEL_BUCKET"], env["MODEL_KEY"])
        else:
            raise ConfigError("set MODEL_PATH, MODEL_S3_URI or MODEL_BUCKET + MODEL_KEY")


def _s3_client():
    import boto3  # provided by the Lambda runtime; imported only when S3 is used

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)


def _fetch_model(settings: Settings, logger) -> Path:
    if settings.model_path:
        path = settings.model_path
    else:
        bucket, key = settings.model_s3
        path = settings.cache_dir / Path(key).name
        if path.is_file() and settings.model_sha256 and sha256_file(path) == settings.model_sha256:
            return path  # a warm /tmp already holds the verified model: hash it once, not twice
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        _s3_client().download_file(bucket, key, str(partial))
        partial.replace(path)
        logger.info("model downloaded", extra={"fields": {"bucket": bucket, "key": key}})
    if settings.model_sha256 and (actual := sha256_file(path)) != settings.model_sha256:
        raise ConfigError(f"MODEL_SHA256 mismatch: {path} has {actual}")
    return path


class _State:
    def __init__(self, env=os.environ):
        started = time.perf_counter()
        self.settings = Settings(env)
        self.logger = _logger(self.settings.log_level)
        self.detector = Detector(_fetch_model(self.settings, self.logger), self.settings.class_map_path)
        letterbox_kernel = kernel() is not None  # loaded now: a kernel that cannot load fails the init
        self.init_ms = (time.perf_counter() - started) * 1e3
        self.cold = True  # until the first request has been answered
        self.logger.info(
            "initialised",
            extra={
                "fields": {
                    "model": self.detector.model_id,
                    "init_ms": round(self.init_ms, 1),
                    "letterbox_kernel": letterbox_kernel,
                }
            },
        )


_STATE: _State | None = None


def init(env=os.environ) -> _State:
    """Cold-start work (config, model download, ONNX session); runs once per execution environment."""
    global _STATE
    _STATE = _State(env)
    return _STATE


# ---- request parsing -------------------------------------------------------------------------


def _b64(text, what: str) -> bytes:
    """Standard base64, or its URL-safe alphabet (RFC 4648), with any ASCII whitespace removed first:
    MIME line breaks (`base64.encodebytes`, what the blog's handler decoded) are common. Anything else,
    mixed alphabets included, is refused."""
    if not isinstance(text, str):
        raise RequestError(f"{what} must be a base64 string")
    compact = "".join(text.split())
    urlsafe = ("-" in compact or "_" in compact) and not ("+" in compact or "/" in compact)
    try:
        return base64.b64decode(compact, altchars=b"-_" if urlsafe else None, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what} is not valid base64") from None


REQUEST_KEYS = {"image", "s3", "s3_uri"}


def _is_proxy(event: dict) -> bool:
    """API Gateway v1/v2 and Function URL events, and a bare HTTP-style body ({"body", "isBase64Encoded"},
    as console test events and `sam local invoke -e` files carry it)."""
    if "requestContext" in event or "httpMethod" in event or event.get("version") == "2.0":
        return True
    return "body" in event and not (REQUEST_KEYS & set(event))


def _parameters(source: dict, settings: Settings) -> dict:
    params = {"threshold": settings.score_threshold, "max_detections": settings.max_detections}
    if source.get("threshold") is not None:
        try:
            params["threshold"] = float(source["threshold"])
        except (TypeError, ValueError):
            raise RequestError(f"threshold must be a number, got {source['threshold']!r}") from None
        if not 0.0 <= params["threshold"] <= 1.0:
            raise RequestError(f"threshold must be within [0, 1], got {source['threshold']!r}")
    if source.get("max_detections") is not None:
        value = source["max_detections"]
        if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= MAX_DETECTIONS_LIMIT:
            raise RequestError(f"max_detections must be an integer in [1, {MAX_DETECTIONS_LIMIT}], got {value!r}")
        params["max_detections"] = int(value)
    return params


def _within_limit(data: bytes, what: str, settings: Settings) -> bytes:
    if len(data) > settings.max_image_bytes:
        raise PayloadTooLarge(
            f"{what} is {len(data)} bytes; limit {settings.max_image_bytes} (send large images by S3 reference)"
        )
    return data


def _image_from_request(request: dict, settings: Settings) -> bytes:
    if "image" in request:
        return _within_limit(_b64(request["image"], "image"), "image", settings)
    if "s3" in request or "s3_uri" in request:
        if "s3_uri" in request:
            try:
                bucket, key = parse_s3_uri(str(request["s3_uri"]))
            except ValueError as err:
                raise RequestError(str(err)) from None
        else:
            ref = request["s3"]
            if not isinstance(ref, dict) or not ref.get("bucket") or not ref.get("key"):
                raise RequestError('"s3" must be {"bucket": ..., "key": ...}')
            bucket, key = str(ref["bucket"]), str(ref["key"])
        return _read_s3_image(bucket, key, S3_IMAGE_BYTES_FACTOR * settings.max_image_bytes)
    raise RequestError('request needs "image" (base64), "s3" {"bucket", "key"} or "s3_uri"')


def _read_s3_image(bucket: str, key: str, limit: int) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        obj = _s3_client().get_object(Bucket=bucket, Key=key)
        if obj["ContentLength"] > limit:
            raise PayloadTooLarge(f"s3://{bucket}/{key} is {obj['ContentLength']} bytes; limit {limit}")
        return obj["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            raise S3NotFound(f"s3://{bucket}/{key} not found") from None
        if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise S3Forbidden(f"access denied to s3://{bucket}/{key}") from None
        if code in ("SlowDown", "ServiceUnavailable", "503", "InternalError", "500", "RequestTimeout"):
            raise S3Unavailable(f"S3 is unavailable for s3://{bucket}/{key} ({code}); retry") from None
        raise
    except BotoCoreError as err:  # no answer from S3 at all: endpoint unreachable, timeouts
        raise S3Unavailable(f"S3 cannot be reached for s3://{bucket}/{key} ({type(err).__name__}); retry") from None


def _parse(event, settings: Settings) -> tuple[bytes, dict]:
    """event -> (image bytes, parameters); raises RequestError for anything malformed."""
    if not isinstance(event, dict):
        raise RequestError("event must be a JSON object")
    if not _is_proxy(event):
        if not (REQUEST_KEYS & set(event)):
            raise RequestError(
                'unrecognised event: expected {"image": base64} or an S3 reference or an HTTP (API Gateway/Function URL) event'
            )
        return _image_from_request(event, settings), _parameters(event, settings)
    body = event.get("body")
    if body is None or body == "":
        raise RequestError("empty body: send a JSON request or the image bytes")
    raw = _b64(body, "body") if event.get("isBase64Encoded") else body.encode("utf-8", "surrogateescape")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    query = event.get("queryStringParameters") or {}
    if headers.get("content-type", "").startswith("application/json") or raw[:1] == b"{":
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestError("body is not valid JSON") from None
        if not isinstance(request, dict):
            raise RequestError("JSON body must be an object")
        return _image_from_request(request, settings), _parameters({**query, **request}, settings)
    return _within_limit(raw, "body", settings), _parameters(query, settings)


# ---- handler ------------------------------------------------------------------------------------


def _respond(event, status: int, payload: dict):
    if isinstance(event, dict) and _is_proxy(event):
        return {
            "statusCode": status,
            "headers": {"content-type": "application/json"},
            "body": json.dumps(payload),
        }
    return payload if status == 200 else {"statusCode": status, **payload}


def _emit_metrics(state: _State, request_id: str, status: int, timings_ms: dict, image=None, detections=0) -> None:
    """One EMF line per request: stage latencies, detections, image size, 4xx/5xx, cold start."""
    cold, state.cold = state.cold, False
    if not state.settings.metrics_namespace:
        return
    metrics = {
        "ColdStart": (int(cold), emf.COUNT),
        "ClientErrors": (int(400 <= status < 500), emf.COUNT),
        "ServerErrors": (int(status >= 500), emf.COUNT),
        **{f"{stage.capitalize()}Ms": (round(value, 2), emf.MILLISECONDS) for stage, value in timings_ms.items()},
    }
    if cold and state.init_ms is not None:  # None after a SnapStart restore: init ran before the snapshot
        metrics["InitMs"] = (round(state.init_ms, 1), emf.MILLISECONDS)
    if image is not None:
        metrics["Detections"] = (detections, emf.COUNT)
        metrics["ImageMegapixels"] = (round(image.height * image.width / 1e6, 3), emf.NONE)
    try:
        line = emf.metric_line(
            state.settings.metrics_namespace,
            {"Model": state.detector.model_id},
            metrics,
            {"request_id": request_id, "status": status},
        )
    except ValueError:  # a metrics defect must never cost the caller the answer
        state.logger.error("metrics not emitted", exc_info=True, extra={"fields": {"request_id": request_id}})
        return
    print(line, file=sys.stdout, flush=True)


def handler(event, context):
    """parse -> decode -> detect -> respond. Never raises: every failure is a JSON error response."""
    state = _STATE or init()
    request_id = getattr(context, "aws_request_id", None) or "local"
    started = time.perf_counter()
    fields = {"request_id": request_id}
    try:
        data, params = _parse(event, state.settings)
        t0 = time.perf_counter()
        config = state.detector.config
        image = decode_for_model(data, config.image_size, state.settings.max_image_pixels, config.pad_fill)
        t1 = time.perf_counter()
        detections, _, timings = state.detector.predict(image, params["threshold"], params["max_detections"])
        total = (time.perf_counter() - started) * 1e3
        timings_ms = {"decode": (t1 - t0) * 1e3, **timings, "total": total}
        payload = {
            "detections": detections,
            "image": {"width": image.width, "height": image.height},
            "model": state.detector.model_id,
            "timings_ms": {k: round(v, 2) for k, v in timings_ms.items()},
        }
        state.logger.info(
            "detected",
            extra={
                "fields": {**fields, "status": 200, "detections": len(detections), "timings_ms": payload["timings_ms"]}
            },
        )
        _emit_metrics(state, request_id, 200, timings_ms, image, len(detections))
        return _respond(event, 200, payload)
    except Exception as err:  # noqa: BLE001 - the handler must answer every request
        status = _status_of(err)
        if status == 500:
            state.logger.error("unexpected error", exc_info=True, extra={"fields": {**fields, "status": 500}})
            message = "internal error"
        else:
            message = str(err)
            state.logger.warning(message, extra={"fields": {**fields, "status": status}})
        _emit_metrics(state, request_id, status, {"total": (time.perf_counter() - started) * 1e3})
        return _respond(event, status, {"error": message, "request_id": request_id})


# ---- SnapStart ------------------------------------------------------------------------------------


def before_snapshot() -> None:
    """Before Lambda snapshots the initialised environment: one inference on a blank image, so that
    ONNX Runtime's lazy allocations and kernel choices are in the snapshot, not in the first request."""
    state = _STATE or init()
    size = state.detector.config.image_size
    state.detector.predict(np.full((size, size, 3), state.detector.config.pad_fill, dtype=np.uint8), 1.0, 1)


def after_restore() -> None:
    """In each environment restored from the shared snapshot: its own random state (the snapshot's would
    repeat in every copy), no partial download left in /tmp, and the next request reported as this
    environment's start (its init happened before the snapshot, so no InitMs). S3 clients are made per
    use (_s3_client), never cached, so none carries the snapshot's connections or credentials."""
    random.seed(os.urandom(16))
    if _STATE is not None:
        for partial in _STATE.settings.cache_dir.glob("*.part"):
            partial.unlink(missing_ok=True)
        _STATE.cold, _STATE.init_ms = True, None


try:  # provided by Lambda's python3.12+ runtime; absent locally, where there are no snapshots
    from snapshot_restore_py import register_after_restore, register_before_snapshot
except ImportError:
    pass
else:
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    init()  # in Lambda, do the cold-start work in the init phase
