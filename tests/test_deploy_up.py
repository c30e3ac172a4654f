"""`deploy up` end to end on a moto server, without the trained model or a real zip: the tiny detector
and a made-up zip holding the handler module are all CloudFormation and moto's Lambda look at. The
smoke request goes through moto's Lambda Invoke, answered by a stand-in for the function."""

import copy
import json
import urllib.request
import zipfile
from unittest import mock

import boto3
import pytest

from helpers.aws import deploy
from helpers.tools.local_aws import MotoDeployer, moto_server

REGION = "eu-central-1"
OK_ANSWER = {"detections": [{"label": "carton", "score": 0.9, "box": [1, 2, 3, 4]}], "image": {"width": 4, "height": 4}}


@pytest.fixture
def fake_zip(tmp_path):
    """What validate_inputs and moto need of a deployment zip: the handler's module, no native code."""
    path = tmp_path / "lambda.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("helpers/runtime/handler.py", "def handler(event, context):\n    return {}\n")
    return path


@pytest.fixture
def moto(monkeypatch):
    """A fresh moto server with its Docker-free Lambda (the setting is process-global: restored after)."""
    from moto.core.config import default_user_config

    saved = copy.deepcopy(default_user_config)
    with moto_server(REGION) as url:
        config = json.dumps({"lambda": {"use_docker": False}}).encode()
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/config", data=config, method="POST")).close()
        yield url
    default_user_config.clear()
    default_user_config.update(saved)


def _function(answer: dict, function_error: str | None = None, calls: list | None = None):
    """A stand-in for LambdaSimpleBackend.invoke answering every invocation with `answer`."""

    def invoke(self, function_name, qualifier, body, headers, response_headers):
        if calls is not None:
            calls.append((function_name, json.loads(body)))
        if function_error:
            response_headers["x-amz-function-error"] = function_error
        return json.dumps(answer).encode()

    return invoke


def _up_with_smoke(url, monkeypatch, fake_zip, model, *extra):
    """`python -m helpers deploy up` as on AWS (so it smoke-tests), its clients pointed at moto through
    AWS_ENDPOINT_URL, with the moto adapter for the outputs moto 5.2 drops."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setattr(deploy, "Deployer", MotoDeployer)
    argv = ["up", "--bucket", "artifacts", "--zip", str(fake_zip), "--model", str(model), "--region", REGION]
    return deploy.main([*argv, *extra])


@pytest.mark.parametrize(
    ("answer", "function_error", "expected"),
    [
        (
            {"statusCode": 500, "error": "internal error (request r-1)"},
            None,
            'error: smoke test of fridge-detector failed: it answered {"statusCode": 500, "error": "internal error (request r-1)"}',
        ),
        (
            {"statusCode": 503, "error": "S3 cannot be reached"},
            None,
            'error: smoke test of fridge-detector failed: it answered {"statusCode": 503, "error": "S3 cannot be reached"}',
        ),
        (
            {"errorType": "ConfigError", "errorMessage": "MODEL_SHA256 mismatch"},
            "Unhandled",
            "error: smoke test of fridge-detector failed: function error Unhandled: "
            '{"errorType": "ConfigError", "errorMessage": "MODEL_SHA256 mismatch"}',
        ),
    ],
)
def test_up_exits_non_zero_with_the_answer_when_the_smoke_request_fails(
    moto, monkeypatch, capsys, fake_zip, tiny_model, answer, function_error, expected
):
    from moto.awslambda_simple.models import LambdaSimpleBackend

    with mock.patch.object(LambdaSimpleBackend, "invoke", _function(answer, function_error)):
        code = _up_with_smoke(moto, monkeypatch, fake_zip, tiny_model)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_up_smoke_tests_the_function_with_a_sample_image_and_exits_0(moto, monkeypatch, capsys, fake_zip, tiny_model):
    from moto.awslambda_simple.models import LambdaSimpleBackend

    calls = []
    with mock.patch.object(LambdaSimpleBackend, "invoke", _function(OK_ANSWER, calls=calls)):
        assert _up_with_smoke(moto, monkeypatch, fake_zip, tiny_model) == 0
    ((name, event),) = calls
    assert name == "fridge-detector" and set(event) == {"image"}
    assert f"smoke test: {json.dumps(OK_ANSWER)}" in capsys.readouterr().out.splitlines()
    assert boto3.client("lambda", endpoint_url=moto, region_name=REGION).get_function(FunctionName="fridge-detector")
