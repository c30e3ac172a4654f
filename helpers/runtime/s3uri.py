"""S3 locations written as URIs, parsed without I/O (stdlib only)."""

from __future__ import annotations


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """ "s3://bucket/key" -> (bucket, key) of one object; ValueError for anything else (no key, a
    trailing "/")."""
    if not uri.startswith("s3://") or "/" not in uri[5:] or uri.endswith("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


def parse_s3_prefix(uri: str) -> tuple[str, str]:
    """ "s3://bucket[/prefix]" -> (bucket, prefix), the prefix possibly empty: a location under which
    objects are listed; ValueError without a bucket."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"not an S3 location: {uri}")
    return bucket, prefix
