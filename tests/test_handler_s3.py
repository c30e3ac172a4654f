"""The handler's S3 paths against a local moto server (model download at init, images by reference),
with the tiny detector: what is tested is the S3 access, not the model. S3's error answers (403, 503,
500, ...) come over real HTTP from a faulting server in tests/test_handler_faults.py."""

import base64
import os

import boto3
import pytest

from helpers.local.moto_aws import moto_server
from helpers.runtime import errors, storage
from helpers.runtime import handler as h
from helpers.runtime.checksum import sha256_file


@pytest.fixture(scope="module")
def s3(tiny_model, sample_jpegs):
    with moto_server("eu-central-1") as url:
        os.environ["AWS_ENDPOINT_URL_S3"] = url
        client = boto3.client("s3", endpoint_url=url, region_name="eu-central-1")
        client.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        client.upload_file(str(tiny_model), "models", "fridge/model.onnx")
        client.put_object(Bucket="models", Key="images/10.jpg", Body=sample_jpegs["10.jpg"])
        yield client
        del os.environ["AWS_ENDPOINT_URL_S3"]


def test_model_is_downloaded_once_and_verified(s3, tiny_model, tmp_path, capsys):
    env = {
        "MODEL_BUCKET": "models",
        "MODEL_KEY": "fridge/model.onnx",
        "MODEL_SHA256": sha256_file(tiny_model),
        "MODEL_CACHE_DIR": str(tmp_path),
        "LOG_LEVEL": "INFO",
    }
    state = h.init(env)
    assert (tmp_path / "model.onnx").is_file() and state.detector.path == tmp_path / "model.onnx"
    assert "model downloaded" in capsys.readouterr().out
    h.init(env)  # a warm /tmp with a matching checksum: no second download
    assert "model downloaded" not in capsys.readouterr().out
    h.init({**env, "MODEL_S3_URI": "s3://models/fridge/model.onnx", "MODEL_BUCKET": "", "MODEL_KEY": ""})
    with pytest.raises(errors.ConfigError, match="MODEL_SHA256 mismatch"):
        h.init({**env, "MODEL_SHA256": "0" * 64})


def test_images_by_s3_reference(s3, tiny_model, sample_jpegs, lambda_context):
    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING"})
    direct = h.handler({"image": base64.b64encode(sample_jpegs["10.jpg"]).decode(), "threshold": 0.01}, lambda_context)
    by_ref = h.handler({"s3": {"bucket": "models", "key": "images/10.jpg"}, "threshold": 0.01}, lambda_context)
    by_uri = h.handler({"s3_uri": "s3://models/images/10.jpg", "threshold": 0.01}, lambda_context)
    assert direct["detections"] == by_ref["detections"] == by_uri["detections"]
    missing_key = h.handler({"s3_uri": "s3://models/images/nope.jpg"}, lambda_context)
    assert missing_key["statusCode"] == 404 and "not found" in missing_key["error"]
    missing_bucket = h.handler({"s3": {"bucket": "no-such-bucket", "key": "x.jpg"}}, lambda_context)
    assert missing_bucket["statusCode"] == 404


def test_one_s3_client_serves_the_model_download_and_every_image(s3, tmp_path, lambda_context, monkeypatch):
    made = []
    make = boto3.client
    monkeypatch.setattr(boto3, "client", lambda *args, **kwargs: made.append(args) or make(*args, **kwargs))
    h.init({"MODEL_S3_URI": "s3://models/fridge/model.onnx", "MODEL_CACHE_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"})
    for _ in range(2):
        assert "detections" in h.handler({"s3_uri": "s3://models/images/10.jpg"}, lambda_context)
    assert made == [("s3",)]


def _unreachable_client():
    """A client of an endpoint where nothing listens (a real connection failure, not a stub)."""
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="eu-central-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )


def test_unreachable_s3_is_503_not_404(tiny_model, lambda_context, monkeypatch):
    """A real connection failure (nothing listens on the endpoint), not a stub: botocore raises
    EndpointConnectionError, a BotoCoreError, which used to be answered as 404 "not found"."""
    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING"})
    monkeypatch.setattr(storage, "client", _unreachable_client)
    out = h.handler({"s3": {"bucket": "models", "key": "images/10.jpg"}}, lambda_context)
    assert out["statusCode"] == 503 and "EndpointConnectionError" in out["error"] and "retry" in out["error"]


def test_unreachable_s3_is_raised_only_to_a_caller_that_asks_for_retries(tiny_model, lambda_context, monkeypatch):
    """The batch state machine sends raise_retryable: S3Unavailable surfaces as a function error its Retry
    names. A Function URL client cannot ask for it (the field inside a proxy body is not read): it gets 503."""
    import json

    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING"})
    monkeypatch.setattr(storage, "client", _unreachable_client)
    ref = {"s3": {"bucket": "models", "key": "images/10.jpg"}}
    with pytest.raises(errors.S3Unavailable, match="cannot be reached"):
        h.handler({**ref, "raise_retryable": True}, lambda_context)
    assert h.handler({**ref, "raise_retryable": False}, lambda_context)["statusCode"] == 503
    proxy = {"version": "2.0", "requestContext": {}, "body": json.dumps({**ref, "raise_retryable": True})}
    assert h.handler(proxy, lambda_context)["statusCode"] == 503
    refused = h.handler({**ref, "raise_retryable": "yes"}, lambda_context)
    assert refused["statusCode"] == 400 and "raise_retryable must be true or false" in refused["error"]
    # A request error is answered, never raised, whatever the flag says.
    missing = h.handler({"s3": {"bucket": "models"}, "raise_retryable": True}, lambda_context)
    assert missing["statusCode"] == 400
