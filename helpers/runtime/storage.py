"""S3 for the handler: the model download at init and images by reference, through one client per
execution environment (after a SnapStart restore, `client.cache_clear()` makes the next call build a
new one: the snapshot's would carry its connections and credentials into every restored copy).

boto3 is imported on first use: the Lambda runtime provides it, the zip does not ship it, and a
function that never touches S3 does not pay for its import."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.runtime.checksum import sha256_file
from helpers.runtime.errors import ConfigError, PayloadTooLarge, S3Forbidden, S3NotFound, S3Unavailable

if TYPE_CHECKING:
    import logging

    from helpers.runtime.settings import Settings

NOT_FOUND = ("NoSuchKey", "NoSuchBucket", "404", "NotFound")
FORBIDDEN = ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch")
UNAVAILABLE = ("SlowDown", "ServiceUnavailable", "503", "InternalError", "500", "RequestTimeout")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


@functools.cache
def client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None)


def fetch_model(settings: Settings, logger: logging.Logger) -> Path:
    """The model file: MODEL_PATH, or the S3 object downloaded to the cache directory (unless a warm
    /tmp already holds it with the expected checksum); verified against MODEL_SHA256 when set."""
    if settings.model_path:
        path = settings.model_path
    else:
        bucket, key = settings.model_s3
        path = settings.cache_dir / Path(key).name
        if path.is_file() and settings.model_sha256 and sha256_file(path) == settings.model_sha256:
            return path  # hashed once, not twice
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")  # never a half-written model under the final name
        client().download_file(bucket, key, str(partial))
        partial.replace(path)
        logger.info("model downloaded", extra={"fields": {"bucket": bucket, "key": key}})
    if settings.model_sha256 and (actual := sha256_file(path)) != settings.model_sha256:
        raise ConfigError(f"MODEL_SHA256 mismatch: {path} has {actual}")
    return path


def read_image(bucket: str, key: str, limit: int) -> bytes:
    """The object's bytes; S3's answers as the handler's errors (404, 403, 413, 503 to retry)."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{bucket}/{key}"
    try:
        obj = client().get_object(Bucket=bucket, Key=key)
        if obj["ContentLength"] > limit:
            raise PayloadTooLarge(f"{where} is {obj['ContentLength']} bytes; limit {limit}")
        return obj["Body"].read()
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in NOT_FOUND:
            raise S3NotFound(f"{where} not found") from None
        if code in FORBIDDEN:
            raise S3Forbidden(f"access denied to {where}") from None
        if code in UNAVAILABLE:
            raise S3Unavailable(f"S3 is unavailable for {where} ({code}); retry") from None
        raise
    except BotoCoreError as err:  # no answer from S3 at all: endpoint unreachable, timeouts
        raise S3Unavailable(f"S3 cannot be reached for {where} ({type(err).__name__}); retry") from None
