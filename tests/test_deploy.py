"""CloudFormation template (cfn-lint, least privilege, taskcat config) and the deploy tool against moto."""

import ast
import base64
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from cfnlint.decode import cfn_yaml

from helpers.aws import deploy
from helpers.local import moto_aws
from helpers.local.moto_aws import MotoDeployer, moto_server

TEMPLATE = deploy.TEMPLATE
ROOT = TEMPLATE.parent.parent


def test_cfn_lint_has_zero_findings():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def _statements(template):
    for name, resource in template["Resources"].items():
        for policy in resource.get("Properties", {}).get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement


def test_role_is_least_privilege_without_wildcards():
    template = cfn_yaml.load(str(TEMPLATE))
    role = template["Resources"]["ExecutionRole"]["Properties"]
    assert "ManagedPolicyArns" not in role  # no AWSLambdaExecute / AWSLambdaBasicExecutionRole
    actions = set()
    for _name, statement in _statements(template):
        assert statement["Effect"] == "Allow"
        statement_actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any("*" in a for a in statement_actions), statement
        actions |= set(statement_actions)
        resource = statement["Resource"]
        if statement_actions == ["s3:GetObject"]:
            assert resource == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ModelBucket}/${ModelKey}"}
        else:  # logs: only the stack's own log group
            assert resource == {"Fn::GetAtt": ["LogGroup", "Arn"]}
        assert "*" not in str(resource)
    assert actions == {"s3:GetObject", "logs:CreateLogStream", "logs:PutLogEvents"}
    assert template["Resources"]["LogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_public_url_gets_both_permissions_and_a_concurrency_cap():
    template = cfn_yaml.load(str(TEMPLATE))
    resources = template["Resources"]
    assert resources["FunctionUrl"]["Properties"]["AuthType"] == {"Ref": "FunctionUrlAuthType"}
    assert template["Parameters"]["FunctionUrlAuthType"]["Default"] == "AWS_IAM"
    url_permission = resources["PublicUrlInvokePermission"]
    invoke_permission = resources["PublicUrlFunctionPermission"]
    assert url_permission["Condition"] == invoke_permission["Condition"] == "PublicUrl"
    assert url_permission["Properties"]["Action"] == "lambda:InvokeFunctionUrl"
    assert url_permission["Properties"]["FunctionUrlAuthType"] == "NONE"
    assert invoke_permission["Properties"]["Action"] == "lambda:InvokeFunction"
    assert invoke_permission["Properties"]["InvokedViaFunctionUrl"] is True
    concurrency = resources["Function"]["Properties"]["ReservedConcurrentExecutions"]
    assert concurrency == {"Fn::If": ["PublicUrl", {"Ref": "PublicReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}


def test_taskcat_config_follows_the_documented_format():
    config = yaml.safe_load((ROOT / ".taskcat.yml").read_text())
    assert set(config) <= {"general", "project", "tests"}
    assert config["project"]["name"] and config["project"]["regions"]
    parameters = set(cfn_yaml.load(str(TEMPLATE))["Parameters"])
    for _name, test in config["tests"].items():
        assert (ROOT / test["template"]).resolve() == TEMPLATE.resolve()
        assert set(test["parameters"]) <= parameters, set(test["parameters"]) - parameters
        required = {p for p, spec in cfn_yaml.load(str(TEMPLATE))["Parameters"].items() if "Default" not in spec}
        assert required <= set(test["parameters"])


@pytest.fixture(scope="module")
def moto_url():
    with moto_server("eu-central-1") as url:
        yield url


def _clients(url):
    return {
        name: boto3.client(name, endpoint_url=url, region_name="eu-central-1")
        for name in ("s3", "lambda", "iam", "cloudformation")
    }


def test_deploy_describe_update_teardown_cycle(moto_url, made_up_zip, tiny_model):
    log = []
    deployer = MotoDeployer("eu-central-1", moto_url, log=log.append)
    zip_path = made_up_zip
    outputs = deployer.up(
        "fridge-test", "fridge-artifacts", zip_path, tiny_model, "x86_64", "fridge-test", MemorySize="2048"
    )
    c = _clients(moto_url)
    config = c["lambda"].get_function(FunctionName="fridge-test")["Configuration"]
    assert config["Runtime"] == "python3.12"
    assert config["Architectures"] == ["x86_64"]
    assert config["MemorySize"] == 2048
    module, function = config["Handler"].rsplit(".", 1)
    assert module.replace(".", "/") + ".py" in zipfile.ZipFile(zip_path).namelist()
    assert function == "handler" and config["Handler"] == deploy.HANDLER
    env = config["Environment"]["Variables"]
    assert env["MODEL_BUCKET"] == "fridge-artifacts" and env["MODEL_KEY"].startswith(f"fridge-test/{tiny_model.stem}-")
    assert env["MODEL_SHA256"] == deploy.sha256_file(tiny_model)
    assert "SCORE_THRESHOLD" not in env  # unset: the handler serves the threshold the model carries
    role = config["Role"].rsplit("/", 1)[1]
    policy = c["iam"].get_role_policy(RoleName=role, PolicyName="read-model-and-write-logs")["PolicyDocument"]
    if isinstance(policy, str):  # moto 5.2 returns a stack-created inline policy as a Python repr
        policy = ast.literal_eval(policy)
    resources = {s["Sid"]: s["Resource"] for s in policy["Statement"]}
    assert resources["ReadTheModelObjectOnly"] == f"arn:aws:s3:::fridge-artifacts/{env['MODEL_KEY']}"
    assert resources["WriteOwnLogGroupOnly"].endswith(":log-group:/aws/lambda/fridge-test")
    assert c["iam"].list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    uploaded = c["s3"].head_object(Bucket="fridge-artifacts", Key=env["MODEL_KEY"])
    assert uploaded["Metadata"]["sha256"] == env["MODEL_SHA256"]
    assert "smoke_test" not in outputs  # needs real AWS
    assert outputs["FunctionName"] == "fridge-test" and outputs["FunctionArn"] == config["FunctionArn"]

    # Update through a change set: memory changes, the uploads are reused.
    deployer.up("fridge-test", "fridge-artifacts", zip_path, tiny_model, "x86_64", "fridge-test", MemorySize="3008")
    assert c["lambda"].get_function(FunctionName="fridge-test")["Configuration"]["MemorySize"] == 3008
    assert any("already uploaded" in line for line in log)

    deployer.down("fridge-test", "fridge-artifacts")
    assert c["s3"].list_objects_v2(Bucket="fridge-artifacts", Prefix="fridge-test/").get("KeyCount", 0) == 0
    stacks = c["cloudformation"].list_stacks()["StackSummaries"]
    assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks if s["StackName"] == "fridge-test")
    with pytest.raises(c["lambda"].exceptions.ResourceNotFoundException):
        c["lambda"].get_function(FunctionName="fridge-test")


def test_bad_parameters_fail_before_anything_is_created(moto_url, made_up_zip, tiny_model, tmp_path):
    deployer = MotoDeployer("eu-central-1", moto_url, log=lambda _: None)
    zip_path = made_up_zip
    before = _clients(moto_url)["s3"].list_buckets()["Buckets"]
    with pytest.raises(deploy.DeployError, match="--bucket"):
        deployer.up("bad", "", zip_path, tiny_model)
    with pytest.raises(deploy.DeployError, match="built for x86_64, not arm64"):
        deployer.up("bad", "bad-bucket", zip_path, tiny_model, architecture="arm64")
    with pytest.raises(deploy.DeployError, match="--arch"):
        deployer.up("bad", "bad-bucket", zip_path, tiny_model, architecture="sparc")
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("helpers/runtime/handler.py", "")
        zf.writestr("blob.bin", os.urandom(51_000_000))
    with pytest.raises(deploy.DeployError, match="at most 50 MB"):
        deployer.up("bad", "bad-bucket", big, tiny_model)
    no_handler = tmp_path / "nohandler.zip"
    with zipfile.ZipFile(no_handler, "w") as zf:
        zf.writestr("other.py", "")
    with pytest.raises(deploy.DeployError, match="would not import"):
        deployer.up("bad", "bad-bucket", no_handler, tiny_model)
    with pytest.raises(deploy.DeployError, match="model not found"):
        deployer.up("bad", "bad-bucket", zip_path, tmp_path / "missing.onnx")
    with pytest.raises(deploy.DeployError, match="--stack-name"):
        deployer.up("1-starts-with-a-digit", "bad-bucket", zip_path, tiny_model)
    assert _clients(moto_url)["s3"].list_buckets()["Buckets"] == before


def test_cli_errors_are_one_line(capsys):
    assert deploy.main(["up", "--bucket", "Not_A_Bucket", "--endpoint-url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --bucket must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-'), got 'Not_A_Bucket'"
    ]


def test_a_stuck_change_set_stops_with_a_clear_error_and_executes_nothing():
    from botocore.stub import Stubber

    deployer = deploy.Deployer("eu-central-1", None, log=lambda _: None)
    expected = {"StackName": "fridge-test", "ChangeSetName": "deploy-1"}
    with Stubber(deployer.cloudformation) as stub:  # any call not queued here (an execute) would fail the test
        for status in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
            stub.add_response("describe_change_set", {"Status": status, **expected}, expected)
        with pytest.raises(
            deploy.DeployFailed, match=r"deploy-1 of stack fridge-test is still CREATE_IN_PROGRESS after 1 s"
        ):
            deployer._wait_change_set("fridge-test", "deploy-1", timeout_s=1)
        stub.assert_no_pending_responses()


def test_a_missing_stack_is_recognised_by_its_error_code(moto_url):
    deployer = deploy.Deployer("eu-central-1", moto_url, log=lambda _: None)
    assert deployer._stack("never-created") is None
    deployer.s3.create_bucket(Bucket="empty-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    deployer.down("never-created", "empty-bucket")  # nothing to delete is not an error


def test_other_describe_errors_are_not_taken_for_a_missing_stack():
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    deployer = deploy.Deployer("eu-central-1", None, log=lambda _: None)
    with Stubber(deployer.cloudformation) as stub:
        stub.add_client_error("describe_stacks", service_error_code="AccessDenied", service_message="not allowed")
        with pytest.raises(ClientError, match="AccessDenied"):
            deployer._stack("fridge-test")


def test_moto_adapter_is_not_on_the_production_path():
    """helpers.aws.deploy (what users run against AWS) imports no test double; the moto quirk lives in helpers.local.moto_aws."""
    code = "import sys, helpers.aws.deploy; print(sorted(m for m in sys.modules if m.startswith(('moto', 'helpers.local.moto_aws'))))"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "[]"


def test_cli_refuses_snapstart_with_provisioned_concurrency(capsys):
    assert deploy.main(["up", "--bucket", "my-bucket", "--snapstart", "yes", "--provisioned-concurrency", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: SnapStart cannot be combined with provisioned concurrency"


def test_the_deployed_function_answers_with_its_own_code_environment_and_model_from_s3(
    moto_url, lambda_zip, tiny_model, sample_jpegs
):
    """moto_aws.run_deployed: the zip read back from the stack's code bucket, run under the runtime
    client with the function's environment, so the model comes from the stack's model object (checked
    against MODEL_SHA256); a wrong checksum in that environment is the function's init error."""
    deployer = MotoDeployer("eu-central-1", moto_url, log=lambda line: None)
    outputs = deployer.up(
        "fridge-test", "fridge-artifacts", Path(lambda_zip["zip"]), tiny_model, "x86_64", "fridge-test"
    )
    event = {"image": base64.b64encode(sample_jpegs["10.jpg"]).decode()}
    answer, function_error = moto_aws.run_deployed(deployer, outputs["FunctionName"], event)
    assert function_error is None and isinstance(answer["detections"], list), answer
    assert answer["image"] == {"width": 499, "height": 666}

    deployer.up(
        "fridge-test",
        "fridge-artifacts",
        Path(lambda_zip["zip"]),
        tiny_model,
        "x86_64",
        "fridge-test",
        ModelSha256="0" * 64,
    )
    answer, function_error = moto_aws.run_deployed(deployer, outputs["FunctionName"], event)
    assert function_error == "Unhandled" and "MODEL_SHA256" in json.dumps(answer), answer
