"""S3 for the handler: the model download at init and images by reference, through one client per
execution environment (after a SnapStart restore, `client.cache_clear()` makes the next call build a
new one: the snapshot's would carry its connections and credentials into every restored copy).

boto3 is imported on first use: the Lambda runtime provides it, the zip does not ship it, and a
function that never touches S3 does not pay for its import."""

from __future__ import annotations

import errno
import functools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.runtime.checksum import sha256_file
from helpers.runtime.errors import (
    ModelAccessDenied,
    ModelCacheFull,
    ModelChecksumMismatch,
    ModelDownloadFailed,
    ModelDownloadTimeout,
    ModelDownloadTruncated,
    ModelFetchError,
    ModelNotFound,
    PayloadTooLarge,
    S3Forbidden,
    S3NotFound,
    S3Unavailable,
)

if TYPE_CHECKING:
    import logging

NOT_FOUND = ("NoSuchKey", "NoSuchBucket", "404", "NotFound")
FORBIDDEN = ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch")
UNAVAILABLE = ("SlowDown", "ServiceUnavailable", "503", "InternalError", "500", "RequestTimeout")


# Timeouts within Lambda's 10 s init phase; botocore's standard retry mode retries throttling and 5xx.
CLIENT_CONFIG = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 3, "mode": "standard"}}
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@functools.cache
def client():
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or None
    return boto3.client("s3", endpoint_url=endpoint, config=Config(**CLIENT_CONFIG))


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    # A stream that breaks off is tried twice, not s3transfer's 5 times: each try may wait read_timeout.
    return TransferConfig(num_download_attempts=2)


def fetch_model(
    model_path: Path | None,
    model_s3: tuple[str, str] | None,
    sha256: str | None,
    cache_dir: Path,
    logger: logging.Logger,
) -> Path:
    """The model file: `model_path`, or the S3 object (bucket, key) downloaded to `cache_dir` (unless a
    warm /tmp already holds it with the expected checksum); verified against `sha256` (MODEL_SHA256) when set."""
    if model_path:
        if sha256 and (actual := sha256_file(model_path)) != sha256:
            raise ModelChecksumMismatch(f"MODEL_SHA256 mismatch: {model_path} has {actual}")
        return model_path
    bucket, key = model_s3
    path = cache_dir / Path(key).name
    if path.is_file() and sha256 and sha256_file(path) == sha256:
        return path  # a warm /tmp: hashed once, not downloaded again
    download_model(bucket, key, path, sha256)
    logger.info("model downloaded", extra={"fields": {"bucket": bucket, "key": key}})
    return path


def download_model(bucket: str, key: str, path: Path, sha256: str | None) -> None:
    """s3://bucket/key -> path, all or nothing: the bytes land in path.part, are checked (size against
    S3's, then MODEL_SHA256) and only then take the final name; every failure is a ModelFetchError
    subclass and leaves no file behind."""
    from boto3.exceptions import RetriesExceededError
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

    where = f"s3://{bucket}/{key}"
    partial = path.with_name(path.name + ".part")  # not with_suffix: a key named x.part would be its own partial
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        size = client().head_object(Bucket=bucket, Key=key)["ContentLength"]
        if shutil.disk_usage(path.parent).free < size:
            raise ModelCacheFull(f"{where} is {size} bytes; {path.parent} has less free space")
        client().download_file(bucket, key, str(partial), Config=_transfer_config())
        if (received := partial.stat().st_size) != size:
            raise ModelDownloadTruncated(f"{where}: {received} of {size} bytes arrived")
        if sha256 and (actual := sha256_file(partial)) != sha256:
            raise ModelChecksumMismatch(f"MODEL_SHA256 mismatch: {where} has {actual}")
        partial.replace(path)
    except ModelFetchError:
        raise
    except RetriesExceededError as err:  # s3transfer retried a broken stream and gave up
        cause = err.last_exception
        if isinstance(cause, ReadTimeoutError):
            raise ModelDownloadTimeout(f"{where}: S3 stopped sending ({type(cause).__name__})") from None
        raise ModelDownloadTruncated(f"{where}: the stream broke off ({type(cause).__name__})") from None
    except ClientError as err:
        named = _named(err, where, ModelNotFound, ModelAccessDenied)
        raise named or ModelDownloadFailed(f"{where}: {_code(err) or err}") from None
    except (ReadTimeoutError, ConnectTimeoutError) as err:
        raise ModelDownloadTimeout(f"{where}: no answer within the timeouts ({type(err).__name__})") from None
    except BotoCoreError as err:
        raise ModelDownloadFailed(f"{where}: {type(err).__name__}: {err}") from None
    except OSError as err:
        if err.errno in DISK_FULL:
            raise ModelCacheFull(f"no room for {where} in {path.parent}: {err.strerror}") from None
        raise
    finally:
        partial.unlink(missing_ok=True)


def _code(err) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _named(err, where: str, not_found: type[Exception], forbidden: type[Exception]) -> Exception | None:
    """S3's "no such bucket or key" and "access denied" answers as the caller's errors; None otherwise."""
    if _code(err) in NOT_FOUND:
        return not_found(f"{where} not found")
    if _code(err) in FORBIDDEN:
        return forbidden(f"access denied to {where}")
    return None


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
        if named := _named(err, where, S3NotFound, S3Forbidden):
            raise named from None
        if _code(err) in UNAVAILABLE:
            raise S3Unavailable(f"S3 is unavailable for {where} ({_code(err)}); retry") from None
        raise
    except BotoCoreError as err:  # no answer from S3 at all: endpoint unreachable, timeouts
        raise S3Unavailable(f"S3 cannot be reached for {where} ({type(err).__name__}); retry") from None
