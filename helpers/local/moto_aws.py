"""Local stand-ins for AWS, for the tests and notebook 05 without an account: a moto server with
dummy credentials, and the Deployer adapted to where moto differs from AWS. Nothing here is on the
path to real AWS: `python -m helpers deploy` uses helpers.aws.deploy.Deployer as it is."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from helpers.aws.deploy import Deployer
from helpers.local.invoke import invoke_zip


@contextlib.contextmanager
def moto_server(region: str = "eu-central-1"):
    """A local moto server on 127.0.0.1 (a free port), empty, with dummy credentials; yields its
    endpoint URL. The environment is restored afterwards."""
    from moto.server import ThreadedMotoServer

    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "MOTO_PORT",
    )
    saved = {k: os.environ.get(k) for k in names}
    for key in names:
        os.environ.pop(key, None)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=region)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ["MOTO_PORT"] = str(port)  # where moto's executing Step Functions send their service calls
        # moto's state lives in the process, not in the server: start each server empty.
        urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")).close()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MotoDeployer(Deployer):
    """The Deployer against a moto server. moto 5.2 drops every stack output when a conditional one
    refers to a resource it skipped (the template's AWS::Lambda::Url when EnableFunctionUrl=no); the
    function's physical id carries the same information, so the outputs are rebuilt from it."""

    def outputs(self, stack_name: str) -> dict[str, str]:
        outputs = super().outputs(stack_name)
        if outputs:
            return outputs
        resources = self.cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
        physical = {r.get("LogicalResourceId"): r.get("PhysicalResourceId") for r in resources}
        if "Function" not in physical:
            return outputs
        arn = self.lambda_.get_function(FunctionName=physical["Function"])["Configuration"]["FunctionArn"]
        return {"FunctionName": physical["Function"], "FunctionArn": arn}


def run_deployed(deployer: Deployer, function_name: str, event: dict) -> tuple[object, str | None]:
    """Deployer.invoke where moto cannot run a function's code (its invoke needs Docker): what the stack
    deployed, run as Lambda runs it. The function's zip, read back from its code bucket, under AWS's
    runtime client (helpers.local.invoke), with the function's own environment, so its model is
    downloaded from moto's S3 at init. (answer, FunctionError or None), as Deployer.invoke."""
    outputs = {
        s["StackName"]: deployer.outputs(s["StackName"]) for s in deployer.cloudformation.describe_stacks()["Stacks"]
    }
    (stack,) = [name for name, values in outputs.items() if function_name in values.values()]
    parameters = deployer.stack_parameters(stack)
    function = deployer.lambda_.get_function(FunctionName=outputs[stack]["FunctionName"])["Configuration"]
    # as strings, as Lambda hands them to the process (moto reports a Number parameter as a number)
    environment = {k: str(v) for k, v in function["Environment"]["Variables"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "code.zip"
        deployer.s3.download_file(parameters["CodeBucket"], parameters["CodeKey"], str(code))
        environment.update(
            AWS_ENDPOINT_URL_S3=deployer.endpoint_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=deployer.region,
            MODEL_CACHE_DIR=tmp,  # Lambda's /tmp
        )
        result = invoke_zip(code, [event], environment, arch=function["Architectures"][0])
    if result["init_error"]:
        return result["init_error"], "Unhandled"
    return result["responses"][0], None


def resources_off_by_condition(template_path, parameters: dict[str, str]) -> dict[str, str]:
    """{logical id: condition} of the template's resources whose Condition is false for `parameters`
    (defaults filled in): AWS does not create them, while moto 5.2 ignores conditions and lists (and
    partly creates) them. Evaluates the intrinsic functions this template uses (Equals, And, Or, Not,
    Condition, Ref to a parameter)."""
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(template_path))
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    values.update({k: str(v) for k, v in parameters.items()})
    conditions = template.get("Conditions", {})

    def evaluate(node):
        if isinstance(node, dict) and len(node) == 1:
            ((function, argument),) = node.items()
            if function == "Ref":
                return values[argument]
            if function == "Condition":
                return evaluate(conditions[argument])
            if function == "Fn::Equals":
                return evaluate(argument[0]) == evaluate(argument[1])
            if function == "Fn::And":
                return all(evaluate(a) for a in argument)
            if function == "Fn::Or":
                return any(evaluate(a) for a in argument)
            if function == "Fn::Not":
                return not evaluate(argument[0])
            raise ValueError(f"unsupported intrinsic in a condition: {function}")
        return str(node)

    return {
        name: resource["Condition"]
        for name, resource in template["Resources"].items()
        if "Condition" in resource and not evaluate(conditions[resource["Condition"]])
    }
