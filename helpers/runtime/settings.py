"""The handler's configuration: the environment, read and validated once per execution environment.

  MODEL_PATH        model file inside the package (relative to the package root) or absolute, or
  MODEL_S3_URI      s3://bucket/key, or MODEL_BUCKET + MODEL_KEY: downloaded once to MODEL_CACHE_DIR
  MODEL_SHA256      optional; verifies the model (and skips the download when /tmp already has it)
  CLASS_MAP_PATH    optional class_map.json for models without metadata (IceVision form accepted)
  SCORE_THRESHOLD   default: the model's metadata (helpers.score_threshold), else 0.5
  MAX_DETECTIONS    default 100 (at most 10000)
  MAX_IMAGE_PIXELS  default 40000000   MAX_IMAGE_BYTES  default 6291456 (S3 images: 10x that)
  LOG_LEVEL         default INFO       MODEL_CACHE_DIR  default /tmp
  METRICS_NAMESPACE default FridgeDetector: CloudWatch metrics (Embedded Metric Format, one line per
                    request, dimension Model); empty turns them off
(defaults and limits: helpers.runtime.config). A bad value raises ConfigError naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers.runtime.config import DEFAULT_MAX_DETECTIONS, MAX_DETECTIONS_LIMIT, MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from helpers.runtime.errors import ConfigError
from helpers.runtime.s3uri import parse_s3_uri

PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # the unzipped deployment package
DEFAULT_METRICS_NAMESPACE = "FridgeDetector"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


class Settings:
    """The environment's values; `score_threshold` is None when SCORE_THRESHOLD is unset (the model's
    metadata then decides, which only the loaded model knows)."""

    def __init__(self, env=os.environ):
        self.score_threshold = _number(env, "SCORE_THRESHOLD", None, float, 0.0, 1.0)
        self.max_detections = _number(env, "MAX_DETECTIONS", DEFAULT_MAX_DETECTIONS, int, 1, MAX_DETECTIONS_LIMIT)
        self.max_image_pixels = _number(env, "MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, int, 1, 1_000_000_000)
        self.max_image_bytes = _number(env, "MAX_IMAGE_BYTES", MAX_IMAGE_BYTES, int, 1, 1 << 30)
        self.log_level = env.get("LOG_LEVEL", "INFO").upper()
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be {'/'.join(LOG_LEVELS)}, got {self.log_level!r}")
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
