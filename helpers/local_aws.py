"""Local stand-ins for AWS, for the tests and notebook 05 without an account: a moto server with
dummy credentials, and the Deployer adapted to where moto differs from AWS. Nothing here is on the
path to real AWS: `python -m helpers.deploy` uses helpers.deploy.Deployer as it is."""

from __future__ import annotations

import contextlib
import logging
import os

from helpers.deploy import Deployer


@contextlib.contextmanager
def moto_server(region: str = "eu-central-1"):
    """A local moto server on 127.0.0.1 (a free port) with dummy credentials; yields its endpoint
    URL. The environment is restored afterwards."""
    from moto.server import ThreadedMotoServer

    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE")
    saved = {k: os.environ.get(k) for k in names}
    for key in names:
        os.environ.pop(key, None)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=region)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
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
    refers to a resource it skipped (the template's AWS::Lambda::Url when EnableFunctionUrl=no);
    the function's physical id carries the same information, so the outputs are rebuilt from it."""

    def outputs(self, stack_name: str) -> dict[str, str]:
        outputs = super().outputs(stack_name)
        if outputs:
            return outputs
        function = self.cloudformation.describe_stack_resource(StackName=stack_name, LogicalResourceId="Function")
        name = function["StackResourceDetail"]["PhysicalResourceId"]
        arn = self.lambda_.get_function(FunctionName=name)["Configuration"]["FunctionArn"]
        return {"FunctionName": name, "FunctionArn": arn}
