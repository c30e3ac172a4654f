"""AWS Lambda entry point `helpers.runtime.handler.handler`: parse -> decode -> detect -> respond.

Configuration: the environment (helpers.runtime.settings), read once per execution environment.
Requests: the event shapes of helpers.runtime.events; all may add "threshold" and "max_detections".

Response (200): {"detections": [{"label", "score", "box": [x1, y1, x2, y2]}], "image": {"width",
  "height"}, "model": "<name>", "timings_ms": {"decode", "preprocess", "inference", "postprocess",
  "total"}}; boxes in original image pixels (after EXIF rotation). Errors: {"error": "<message>",
  "request_id": "..."} with the status helpers.runtime.errors.STATUS gives (500: details only in the
  log). Proxy events get {statusCode, headers, body}; direct invocations get the JSON object itself
  with "statusCode" added on errors, except that a direct event with "raise_retryable": true (what the
  batch state machine sends) gets S3Unavailable raised: a function error named for its Retry.
"""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np

from helpers.runtime import emf, logs, storage
from helpers.runtime.config import S3_IMAGE_BYTES_FACTOR
from helpers.runtime.contract import served_threshold
from helpers.runtime.decode import decode_for_model
from helpers.runtime.errors import PayloadTooLarge, S3Unavailable, status_of
from helpers.runtime.events import Request, is_proxy, parse
from helpers.runtime.kernel import load_kernel
from helpers.runtime.model import Detector
from helpers.runtime.settings import Settings


class State:
    """What every request uses, built once per execution environment (the cold start)."""

    def __init__(self, env=os.environ):
        started = time.perf_counter()
        self.settings = settings = Settings(env)
        self.logger = logs.logger(settings.log_level)
        model = storage.fetch_model(
            settings.model_path, settings.model_s3, settings.model_sha256, settings.cache_dir, self.logger
        )
        self.detector = Detector(model, settings.class_map_path)
        # What a request that names no threshold gets (logged at init).
        self.score_threshold = served_threshold(None, settings.score_threshold, self.detector.contract.score_threshold)
        letterbox_kernel = load_kernel() is not None  # loaded now: a kernel that cannot load fails the init
        self.init_ms: float | None = (time.perf_counter() - started) * 1e3  # None after a SnapStart restore
        self.cold = True  # until the first request has been answered
        fields = {"model": self.detector.model_id, "init_ms": round(self.init_ms, 1)}
        fields.update(letterbox_kernel=letterbox_kernel, score_threshold=self.score_threshold)
        self.logger.info("initialised", extra={"fields": fields})


_STATE: State | None = None


def init(env=os.environ) -> State:
    """Cold-start work (config, model download, ONNX session); runs once per execution environment."""
    global _STATE
    _STATE = State(env)
    return _STATE


def _image_bytes(request: Request, settings: Settings) -> bytes:
    limit = settings.max_image_bytes
    if request.s3:
        return storage.read_image(*request.s3, S3_IMAGE_BYTES_FACTOR * limit)
    if len(request.image) > limit:
        raise PayloadTooLarge(f"image is {len(request.image)} bytes; limit {limit} (send large images by S3 reference)")
    return request.image


def _respond(event, status: int, payload: dict):
    if is_proxy(event):
        return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(payload)}
    return payload if status == 200 else {"statusCode": status, **payload}


def _metrics(state: State, request_id: str, status: int, timings_ms: dict, image=None, detections=0) -> None:
    """One EMF line per request (helpers.runtime.emf.request_metrics); never the reason a request fails."""
    cold, state.cold = state.cold, False
    if not state.settings.metrics_namespace:
        return
    size = (image.width, image.height) if image is not None else None
    metrics = emf.request_metrics(status, timings_ms, cold, state.init_ms, size, detections)
    try:
        line = emf.metric_line(
            state.settings.metrics_namespace,
            {"Model": state.detector.model_id},
            metrics,
            {"request_id": request_id, "status": status},
        )
    except ValueError:
        state.logger.error("metrics not emitted", exc_info=True, extra={"fields": {"request_id": request_id}})
        return
    print(line, flush=True)


def handler(event, context):
    """parse -> decode -> detect -> respond. Every failure, an init's included, is a JSON error response
    (and an init that failed is tried again by the next request); the one exception raised is
    S3Unavailable, and only to a request that asks for it (raise_retryable) so that its caller retries."""
    request_id = getattr(context, "aws_request_id", None) or "local"
    started = time.perf_counter()
    state, request = _STATE, None
    try:
        state = state or init()
        request = parse(event)
        data = _image_bytes(request, state.settings)
        t0 = time.perf_counter()
        config = state.detector.config
        image = decode_for_model(data, config.image_size, state.settings.max_image_pixels, config.pad_fill)
        t1 = time.perf_counter()
        threshold = served_threshold(
            request.threshold, state.settings.score_threshold, state.detector.contract.score_threshold
        )
        limit = request.max_detections or state.settings.max_detections
        prediction = state.detector.predict(image, threshold, limit)
        detections = prediction.detections
        timings_ms = {
            "decode": (t1 - t0) * 1e3,
            **prediction.timings_ms,
            "total": (time.perf_counter() - started) * 1e3,
        }
        payload = {
            "detections": detections.to_json(state.detector.class_map),
            "image": {"width": image.width, "height": image.height},
            "model": state.detector.model_id,
            "timings_ms": {k: round(v, 2) for k, v in timings_ms.items()},
        }
        fields = {"request_id": request_id, "status": 200, "detections": len(detections)}
        state.logger.info("detected", extra={"fields": {**fields, "timings_ms": payload["timings_ms"]}})
        _metrics(state, request_id, 200, timings_ms, image, len(detections))
        return _respond(event, 200, payload)
    except Exception as err:  # noqa: BLE001 - the handler must answer every request
        status, logger = status_of(err), state.logger if state else logs.logger()
        fields = {"request_id": request_id, "status": status}
        if status == 500:
            logger.error("unexpected error", exc_info=True, extra={"fields": fields})
        else:
            logger.warning(str(err), extra={"fields": fields})
        if state:
            _metrics(state, request_id, status, {"total": (time.perf_counter() - started) * 1e3})
        if isinstance(err, S3Unavailable) and request is not None and request.raise_retryable:
            raise
        message = "internal error" if status == 500 else str(err)
        return _respond(event, status, {"error": message, "request_id": request_id})


def before_snapshot() -> None:
    """Before Lambda snapshots the initialised environment: one inference on a blank image, so that
    ONNX Runtime's lazy allocations and kernel choices are in the snapshot, not in the first request."""
    state = _STATE or init()
    size, fill = state.detector.config.image_size, state.detector.config.pad_fill
    state.detector.predict(np.full((size, size, 3), fill, dtype=np.uint8), 1.0, 1)


def after_restore() -> None:
    """In each environment restored from the shared snapshot: its own random state (the snapshot's would
    repeat in every copy), its own S3 client (not the snapshot's connections and credentials), no partial
    download left in /tmp, and the next request reported as this environment's cold start (without an
    InitMs: its init happened before the snapshot)."""
    random.seed(os.urandom(16))
    storage.client.cache_clear()
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
