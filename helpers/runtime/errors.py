"""What can go wrong in a request, and the one table that turns it into an HTTP status.

Statuses are decided here and nowhere else: an exception's status is that of the nearest class in
its MRO that `STATUS` names, 500 for anything it does not (whose details then stay in the log).
Stdlib only and no other module of the runtime: importing the table loads nothing else.
"""

from __future__ import annotations


class ConfigError(RuntimeError):
    """A bad environment variable or model: fails the init, naming the variable."""


class ModelFetchError(ConfigError):
    """The model could not be fetched from S3 into the cache: the init fails under one of the names below
    (Lambda reports it as the init's errorType), nothing partial is left behind, the next init tries again."""


class ModelNotFound(ModelFetchError):
    """No such bucket or key."""


class ModelAccessDenied(ModelFetchError):
    """The execution role may not read the model object."""


class ModelDownloadTimeout(ModelFetchError):
    """S3 did not answer or stopped sending within the client's timeouts."""


class ModelDownloadTruncated(ModelFetchError):
    """The connection ended before the whole object arrived."""


class ModelChecksumMismatch(ModelFetchError):
    """The bytes are not what MODEL_SHA256 names (a corrupted or replaced object)."""


class ModelCacheFull(ModelFetchError):
    """The cache directory (ephemeral /tmp) has no room for the model."""


class ModelDownloadFailed(ModelFetchError):
    """Any other failure to reach or read S3."""


class RequestError(Exception):
    """The request is malformed; its message goes back to the caller."""


class PayloadTooLarge(RequestError):
    """More bytes than the limit, inline or by S3 reference."""


class S3Forbidden(RequestError):
    """The function may not read the referenced object."""


class S3NotFound(RequestError):
    """No such bucket or key."""


class ImageError(ValueError):
    """The bytes are not a usable image (-> HTTP 400)."""


class ImageTooLarge(ImageError):
    """The image exceeds the pixel budget (-> HTTP 413)."""


class S3Unavailable(Exception):
    """S3 could not be reached or answered with a server error: worth retrying, not the caller's fault."""


STATUS: dict[type[BaseException], int] = {
    RequestError: 400,
    ImageError: 400,
    S3Forbidden: 403,
    S3NotFound: 404,
    PayloadTooLarge: 413,
    ImageTooLarge: 413,
    S3Unavailable: 503,
}


def status_of(err: BaseException) -> int:
    """The status of the most specific class of `err` in STATUS; 500 when none is."""
    return next((STATUS[cls] for cls in type(err).__mro__ if cls in STATUS), 500)
