"""The local invoke: the built zip under AWS's runtime client (awslambdaric) and a local Runtime API.

What the runtime client itself does with the package — handler resolution, init errors, an exception
escaping a handler, proxy events — is observed here as Lambda would report it."""

import base64
import json
import zipfile

import pytest

from helpers.build import interpreters
from helpers.local.invoke import invoke_zip, main
from helpers.local.runtime_api import RuntimeApi

needs_312 = pytest.mark.skipif(interpreters.find_python("3.12") is None, reason="no CPython 3.12 (PATH or pyenv)")


@needs_312
def test_a_bad_setting_is_an_init_error_naming_it(lambda_zip, tiny_model):
    report = invoke_zip(lambda_zip["zip"], [{"image": "x"}], {"MODEL_PATH": str(tiny_model), "SCORE_THRESHOLD": "abc"})
    assert report["init_error"]["errorType"] == "ConfigError"
    assert "SCORE_THRESHOLD" in report["init_error"]["errorMessage"]
    assert report["responses"] == [] and report["cold_init_ms"] is None


@needs_312
def test_a_wrong_handler_string_is_the_runtimes_own_error(lambda_zip, tiny_model):
    report = invoke_zip(
        lambda_zip["zip"], [{"image": "x"}], {"MODEL_PATH": str(tiny_model)}, handler="helpers.runtime.handler.nope"
    )
    assert report["init_error"]["errorType"] == "Runtime.HandlerNotFound"


@needs_312
def test_events_of_every_shape_get_an_answer_in_order(lambda_zip, onnx_model, sample_jpegs):
    image = base64.b64encode(next(iter(sample_jpegs.values()))).decode()
    proxy = {"requestContext": {"http": {"method": "POST"}}, "body": image, "isBase64Encoded": True}
    events = [proxy, "not an object", {"image": image}, {"body": json.dumps({"image": image})}]
    report = invoke_zip(lambda_zip["zip"], events, {"MODEL_PATH": str(onnx_model), "LOG_LEVEL": "WARNING"})
    proxied, refused, direct, bare_body = report["responses"]
    assert proxied["statusCode"] == 200 and json.loads(proxied["body"])["detections"] == direct["detections"]
    assert refused["statusCode"] == 400 and "JSON object" in refused["error"]
    assert bare_body["statusCode"] == 200 and json.loads(bare_body["body"])["detections"] == direct["detections"]
    # The runtime client passed the Runtime API's request id through the context into the answer.
    assert refused["request_id"] == report["request_ids"][1]


@needs_312
def test_an_exception_in_a_handler_comes_back_as_the_runtimes_error_shape(tmp_path, lambda_zip):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    raise KeyError('image')\n")
    report = invoke_zip(broken, [{}], {}, handler="app.handler")
    assert report["failed"] == [0]
    assert report["responses"][0]["errorType"] == "KeyError"
    assert report["responses"][0]["errorMessage"] == "'image'"


def test_the_local_runtime_api_answers_only_its_routes():
    import http.client
    import threading

    api = RuntimeApi([{"image": "x"}])
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection(api.address)
        connection.request("GET", "/2018-06-01/runtime/invocation/next")
        response = connection.getresponse()
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        assert json.loads(response.read()) == {"image": "x"} and response.getheader("Lambda-Runtime-Deadline-Ms")
        connection.request("POST", f"/2018-06-01/runtime/invocation/{request_id}/response", body=b'{"ok": 1}')
        accepted = connection.getresponse()
        assert (accepted.status, accepted.read()) == (202, b'{"status": "OK"}') and api.done.is_set()
        connection.request("GET", "/2018-06-01/runtime/elsewhere")
        assert connection.getresponse().status == 404
    finally:
        api.shutdown()
        api.server_close()


def test_cli_exits_2_with_one_line_for_a_missing_zip(capsys, tmp_path):
    assert main([str(tmp_path / "missing.zip"), str(tmp_path / "x.jpg")]) == 2
    assert capsys.readouterr().err.strip() == f"error: file not found: {tmp_path / 'missing.zip'}"


@needs_312
def test_snapstart_init_runs_the_hooks_through_the_runtime_client(lambda_zip, onnx_model, sample_jpegs):
    image = base64.b64encode(next(iter(sample_jpegs.values()))).decode()
    env = {"MODEL_PATH": str(onnx_model), "LOG_LEVEL": "WARNING"}
    plain = invoke_zip(lambda_zip["zip"], [{"image": image}], env)
    restored = invoke_zip(lambda_zip["zip"], [{"image": image}] * 2, env, snapstart=True)
    assert not plain["restored_from_snapshot"] and restored["restored_from_snapshot"]
    assert (
        restored["init_error"] is None and restored["responses"][0]["detections"] == plain["responses"][0]["detections"]
    )
    # The first request after the restore is this environment's cold start, and after_restore removed its
    # InitMs (the init happened before the snapshot); an ordinary start reports an InitMs.
    cold_flags = [json.loads(line)["ColdStart"] for line in restored["stdout"].splitlines() if '"_aws"' in line]
    assert cold_flags == [1, 0]
    assert restored["handler_init_ms"] is None and plain["handler_init_ms"] > 0
