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
from helpers.local.moto_aws import MotoDeployer, moto_server

REGION = "eu-central-1"
#: moto 5.2 creates no Function URL or alias from a template (it says so); their parameters are checked.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS..Lambda..(Url|Alias) :UserWarning")
OK_ANSWER = {"detections": [{"label": "carton", "score": 0.9, "box": [1, 2, 3, 4]}], "image": {"width": 4, "height": 4}}


@pytest.fixture
def any_arch_zip(tmp_path):
    """A made-up zip holding the handler's module and no native code: valid for either architecture."""
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


def _up_with_smoke(url, monkeypatch, any_arch_zip, model, *extra):
    """`python -m helpers deploy up` as on AWS (so it smoke-tests), its clients pointed at moto through
    AWS_ENDPOINT_URL, with the moto adapter for the outputs moto 5.2 drops."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setattr(deploy, "Deployer", MotoDeployer)
    argv = ["up", "--bucket", "artifacts", "--zip", str(any_arch_zip), "--model", str(model), "--region", REGION]
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
    moto, monkeypatch, capsys, any_arch_zip, tiny_model, answer, function_error, expected
):
    from moto.awslambda_simple.models import LambdaSimpleBackend

    with mock.patch.object(LambdaSimpleBackend, "invoke", _function(answer, function_error)):
        code = _up_with_smoke(moto, monkeypatch, any_arch_zip, tiny_model)
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [expected]


def test_up_smoke_tests_the_function_with_a_sample_image_and_exits_0(
    moto, monkeypatch, capsys, any_arch_zip, tiny_model
):
    from moto.awslambda_simple.models import LambdaSimpleBackend

    calls = []
    with mock.patch.object(LambdaSimpleBackend, "invoke", _function(OK_ANSWER, calls=calls)):
        assert _up_with_smoke(moto, monkeypatch, any_arch_zip, tiny_model) == 0
    ((name, event),) = calls
    assert name == "fridge-detector" and set(event) == {"image"}
    assert f"smoke test: {json.dumps(OK_ANSWER)}" in capsys.readouterr().out.splitlines()
    assert boto3.client("lambda", endpoint_url=moto, region_name=REGION).get_function(FunctionName="fridge-detector")


def _cli_up(url, any_arch_zip, model, *options):
    argv = ["up", "--bucket", "artifacts", "--zip", str(any_arch_zip), "--model", str(model), "--region", REGION]
    return deploy.main([*argv, "--endpoint-url", url, "--stack-name", "stk", "--service-name", "svc", *options])


def _parameters(url) -> dict:
    stack = boto3.client("cloudformation", endpoint_url=url, region_name=REGION).describe_stacks(StackName="stk")
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Stacks"][0]["Parameters"]}


#: Each `deploy up` option, a value other than its default, and the template parameter it sets.
OPTIONS = [
    (["--memory", "3008"], {"MemorySize": "3008"}),
    (["--arch", "arm64"], {"Architecture": "arm64"}),
    (["--function-url", "yes"], {"EnableFunctionUrl": "yes"}),
    (["--url-auth", "NONE"], {"FunctionUrlAuthType": "NONE"}),
    (["--snapstart", "yes"], {"SnapStart": "yes"}),
    (["--provisioned-concurrency", "2"], {"ProvisionedConcurrency": "2"}),
]


def test_up_maps_every_option_to_its_template_parameter_and_a_redeploy_changes_nothing(
    moto, capsys, any_arch_zip, tiny_model
):
    assert _cli_up(moto, any_arch_zip, tiny_model) == 0
    defaults = _parameters(moto)
    sha = deploy.sha256_file(tiny_model)
    assert defaults["ServiceName"] == "svc" and defaults["CodeBucket"] == defaults["ModelBucket"] == "artifacts"
    assert defaults["CodeKey"] == f"stk/lambda-{deploy.sha256_file(any_arch_zip)[:12]}.zip"
    assert defaults["ModelKey"] == f"stk/tiny-{sha[:12]}.onnx" and defaults["ModelSha256"] == sha
    expected_defaults = {"MemorySize": "2048", "Architecture": "x86_64", "EnableFunctionUrl": "no"}
    expected_defaults |= {"FunctionUrlAuthType": "AWS_IAM", "SnapStart": "no", "ProvisionedConcurrency": "0"}
    assert {k: defaults[k] for k in expected_defaults} == expected_defaults
    capsys.readouterr()
    # The same inputs again: no change set executed, the uploads reused, exit 0. (moto 5.2 recognises
    # "no changes" only right after a create.)
    assert _cli_up(moto, any_arch_zip, tiny_model) == 0
    out = capsys.readouterr().out
    assert "no changes: the stack already matches" in out and out.count("already uploaded") == 2
    assert "UPDATE_IN_PROGRESS" not in out
    for options, expected in OPTIONS:
        assert _cli_up(moto, any_arch_zip, tiny_model, *options) == 0
        assert _parameters(moto) == {**defaults, **expected}, options
    function = boto3.client("lambda", endpoint_url=moto, region_name=REGION).get_function(FunctionName="svc")
    assert function["Configuration"]["MemorySize"] == 2048  # the last deploy set the memory back


def test_a_change_set_that_fails_is_one_line_with_its_reason_and_executes_nothing(
    moto, capsys, any_arch_zip, tiny_model
):
    from moto.cloudformation.models import CloudFormationBackend

    reason = "Parameter 'MemorySize' must be a number not less than 512"
    create = CloudFormationBackend.create_change_set

    def failing(self, *args, **kwargs):  # what AWS answers for a value outside the template's bounds
        made = create(self, *args, **kwargs)
        change_set = self.change_sets[made[0]]
        change_set.status, change_set.execution_status, change_set.status_reason = "FAILED", "UNAVAILABLE", reason
        return made

    with mock.patch.object(CloudFormationBackend, "create_change_set", failing):
        assert _cli_up(moto, any_arch_zip, tiny_model, "--memory", "100") == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: change set failed: {reason}"]
    stacks = boto3.client("cloudformation", endpoint_url=moto, region_name=REGION).list_stacks()["StackSummaries"]
    assert [s["StackStatus"] for s in stacks if s["StackName"] == "stk"] in ([], ["REVIEW_IN_PROGRESS"])


def test_an_update_that_rolls_back_fails_the_command_and_the_stack_keeps_its_parameters(
    moto, capsys, any_arch_zip, tiny_model
):
    from moto.cloudformation.models import CloudFormationBackend

    assert _cli_up(moto, any_arch_zip, tiny_model) == 0
    before = _parameters(moto)

    def rolled_back(self, change_set_name, stack_name=None):
        """What AWS does when a resource fails to update: the stack goes back to what it was."""
        change_set = next(
            c for c in self.change_sets.values() if change_set_name in (c.change_set_id, c.change_set_name)
        )
        stack = self.stacks[change_set.stack_id]
        for status, reason in [
            ("UPDATE_IN_PROGRESS", "User Initiated"),
            ("UPDATE_ROLLBACK_IN_PROGRESS", "Resource Function failed: MemorySize out of range"),
            ("UPDATE_ROLLBACK_COMPLETE", None),
        ]:
            stack._add_stack_event(status, resource_status_reason=reason)
        stack.status = "UPDATE_ROLLBACK_COMPLETE"

    capsys.readouterr()
    with mock.patch.object(CloudFormationBackend, "execute_change_set", rolled_back):
        assert _cli_up(moto, any_arch_zip, tiny_model, "--memory", "4096") == 2
    out, err = capsys.readouterr()
    assert "UPDATE_ROLLBACK_COMPLETE" in out  # the stack's events, printed as they came
    (line,) = err.strip().splitlines()
    assert line.startswith("error: Waiter StackUpdateComplete failed") and "UPDATE_ROLLBACK_COMPLETE" in line
    assert _parameters(moto) == before
