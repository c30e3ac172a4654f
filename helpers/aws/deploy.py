"""Deploy and tear down the detector stack with boto3: S3 uploads, change sets, waiting, smoke test.

    python -m helpers deploy up --bucket my-bucket [--zip ZIP] [--model MODEL.onnx]
    python -m helpers deploy down --bucket my-bucket
    (add --endpoint-url http://127.0.0.1:5000 to talk to a moto server instead of AWS; for moto's
quirks use helpers.local.moto_aws.MotoDeployer, as the tests and notebook 05 do)

--zip and --model default to this mode's artefacts (helpers.paths), where helpers.build.package and
helpers.export.onnx_export write them.

Uploads are content-addressed (key contains the sha256 prefix), so a new zip or model changes the
stack's parameters and the change set updates the function; unchanged inputs give "no changes".
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import time
import zipfile
from pathlib import Path

from helpers.build.arch import ARCHITECTURES
from helpers.build.package import UNZIPPED_LIMIT, ZIP_LIMIT
from helpers.paths import SAMPLE_DIR, TEMPLATE, not_found, run_artifacts
from helpers.runtime.checksum import sha256_file

HANDLER = "helpers.runtime.handler.handler"
CHANGE_SET_TIMEOUT_S = 300  # creating a change set takes seconds; minutes means it is stuck
STACK_TIMEOUT_S = 1800  # then the stack waiter's own few attempts decide (it raises on a timeout)
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
STACK_NAME_RE = re.compile(r"^[a-zA-Z][-a-zA-Z0-9]{0,127}$")  # CloudFormation's own rule


class DeployError(ValueError):
    """Bad input, detected before anything is created."""


class DeployFailed(Exception):
    """AWS accepted the request but the deployment did not happen (failed or stuck change set)."""


def check_stack_name(stack_name: str) -> None:
    if not STACK_NAME_RE.match(stack_name or ""):
        raise DeployError(
            f"--stack-name must start with a letter and hold only letters, digits and '-' (max 128), got {stack_name!r}"
        )


def validate_inputs(
    bucket: str,
    zip_path: Path,
    model_path: Path,
    architecture: str,
    service_name: str,
    stack_name: str = "fridge-detector",
) -> None:
    """Every check that needs no AWS call: fail before anything is uploaded or created."""
    check_stack_name(stack_name)
    if not bucket or not BUCKET_RE.match(bucket):
        raise DeployError(
            f"--bucket must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-'), got {bucket!r}"
        )
    if not re.match(r"^[a-zA-Z0-9-_]{1,40}$", service_name):
        raise DeployError(f"--service-name must be 1-40 letters, digits, '-' or '_', got {service_name!r}")
    if architecture not in ARCHITECTURES:
        raise DeployError(f"--arch must be x86_64 or arm64, got {architecture!r}")
    if not Path(zip_path).is_file():
        raise DeployError(not_found("zip", zip_path))
    if not Path(model_path).is_file():
        raise DeployError(not_found("model", model_path))
    size = Path(zip_path).stat().st_size
    if size > ZIP_LIMIT:
        raise DeployError(f"{zip_path} is {size / 1e6:.1f} MB; Lambda accepts at most 50 MB zipped")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            unzipped = sum(i.file_size for i in zf.infolist())
    except zipfile.BadZipFile:
        raise DeployError(f"{zip_path} is not a zip file") from None
    if unzipped > UNZIPPED_LIMIT:
        raise DeployError(f"{zip_path} unzips to {unzipped / 1e6:.1f} MB; Lambda accepts at most 250 MB")
    module = HANDLER.rsplit(".", 1)[0].replace(".", "/") + ".py"
    if module not in names:
        raise DeployError(f"{zip_path} has no {module}: the template's handler {HANDLER} would not import")
    extensions = [n for n in names if n.endswith(".so") and "cpython-3" in n]
    other = next(a for a in ARCHITECTURES if a != architecture)
    if any(ARCHITECTURES[other].triplet in n for n in extensions):
        raise DeployError(
            f"{zip_path} was built for {other}, not {architecture} (python -m helpers package --arch {architecture})"
        )


class Deployer:
    def __init__(self, region: str | None = None, endpoint_url: str | None = None, log=print):
        import boto3

        session = boto3.session.Session(region_name=region)
        self.region = session.region_name or "us-east-1"
        kwargs = {"endpoint_url": endpoint_url, "region_name": self.region}
        self.s3 = session.client("s3", **kwargs)
        self.cloudformation = session.client("cloudformation", **kwargs)
        self.lambda_ = session.client("lambda", **kwargs)
        self.endpoint_url = endpoint_url
        self.log = log

    # ---- S3 -------------------------------------------------------------------------------

    def ensure_bucket(self, bucket: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as err:
            if err.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.log(f"creating bucket s3://{bucket}")
            config = (
                {} if self.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
            )
            self.s3.create_bucket(Bucket=bucket, **config)

    def upload(self, bucket: str, path: Path, prefix: str) -> tuple[str, str]:
        """Upload once per content: key <prefix>/<stem>-<sha12><suffix>, with SHA-256 checked by S3."""
        from botocore.exceptions import ClientError

        digest = sha256_file(path)
        key = f"{prefix}/{path.stem}-{digest[:12]}{path.suffix}"
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
            if head.get("Metadata", {}).get("sha256") == digest:
                self.log(f"s3://{bucket}/{key} already uploaded")
                return key, digest
        except ClientError:
            pass
        self.log(f"uploading {path.name} ({path.stat().st_size / 1e6:.1f} MB) to s3://{bucket}/{key}")
        with open(path, "rb") as body:
            self.s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                Metadata={"sha256": digest},
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
            )
        return key, digest

    # ---- CloudFormation -------------------------------------------------------------------

    def _stack(self, name: str) -> dict | None:
        """The live stack, or None. describe_stacks answers a missing stack with the error code
        ValidationError (there is no dedicated code); names are validated first (check_stack_name),
        so here that code means "no such stack"."""
        from botocore.exceptions import ClientError

        check_stack_name(name)
        try:
            stack = self.cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ValidationError":
                return None
            raise
        return None if stack["StackStatus"] == "REVIEW_IN_PROGRESS" else stack

    def apply(self, stack_name: str, parameters: dict[str, str], template: Path = TEMPLATE) -> dict[str, str]:
        """Create or update `template`'s stack through a change set, wait with progress, return the outputs."""
        existing = self._stack(stack_name)
        change_set = f"deploy-{int(time.time())}"
        self.cloudformation.create_change_set(
            StackName=stack_name,
            ChangeSetName=change_set,
            ChangeSetType="UPDATE" if existing else "CREATE",
            TemplateBody=template.read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        description = self._wait_change_set(stack_name, change_set)
        if description is None:
            self.log("no changes: the stack already matches")
            return self.outputs(stack_name)
        for change in description.get("Changes", []):
            detail = change.get("ResourceChange", {})
            self.log(
                f"  {detail.get('Action', '?'):8} {detail.get('LogicalResourceId')} ({detail.get('ResourceType')})"
            )
        earlier = self._event_ids(stack_name)
        self.cloudformation.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
        self._wait_stack(stack_name, "stack_update_complete" if existing else "stack_create_complete", earlier)
        return self.outputs(stack_name)

    def _wait_change_set(
        self, stack_name: str, change_set: str, timeout_s: float = CHANGE_SET_TIMEOUT_S
    ) -> dict | None:
        """The change set's description once created; None (and deleted) when it changes nothing."""
        deadline = time.monotonic() + timeout_s
        while True:
            description = self.cloudformation.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
            status = description["Status"]
            if status == "CREATE_COMPLETE":
                return description
            if status == "FAILED":
                reason = description.get("StatusReason", "")
                if "didn't contain changes" in reason or "No updates" in reason:
                    self.cloudformation.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
                    return None
                raise DeployFailed(f"change set failed: {reason}")
            if time.monotonic() >= deadline:
                # Left in place (nothing was executed) so its state can still be inspected.
                raise DeployFailed(
                    f"change set {change_set} of stack {stack_name} is still {status} after {timeout_s:.0f} s; "
                    "nothing was deployed (inspect or delete it in the CloudFormation console)"
                )
            time.sleep(1)

    def _event_ids(self, stack_name: str) -> set[str]:
        return {e["EventId"] for e in self.cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]}

    def _wait_stack(self, stack_name: str, waiter: str, earlier: set[str] | frozenset = frozenset()) -> None:
        """Print the stack events not in `earlier` (those of this operation) until the stack settles;
        stack_name may be a stack id (deletes)."""
        seen = set(earlier)
        waiter_obj = self.cloudformation.get_waiter(waiter)
        deadline = time.monotonic() + STACK_TIMEOUT_S
        while time.monotonic() < deadline:
            events = self.cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
            for event in reversed(events):
                if event["EventId"] not in seen:
                    seen.add(event["EventId"])
                    self.log(f"  {event['ResourceStatus']:24} {event['LogicalResourceId']}")
            status = self.cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
            if status.endswith("_COMPLETE") or status.endswith("_FAILED"):
                break
            time.sleep(2)
        waiter_obj.wait(StackName=stack_name, WaiterConfig={"Delay": 2, "MaxAttempts": 5})

    def stack_parameters(self, stack_name: str) -> dict[str, str] | None:
        """The live stack's parameter values, or None when there is no such stack."""
        stack = self._stack(stack_name)
        if stack is None:
            return None
        return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters") or []}

    def outputs(self, stack_name: str) -> dict[str, str]:
        stack = self.cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) or []}

    def invoke(self, function_name: str, event: dict) -> tuple[object, str | None]:
        """One request through Lambda Invoke: (the function's answer, Lambda's FunctionError or None)."""
        response = self.lambda_.invoke(FunctionName=function_name, Payload=json.dumps(event).encode())
        return json.loads(response["Payload"].read()), response.get("FunctionError")

    def smoke_test(self, function_name: str, image: Path = SAMPLE_DIR / "images" / "10.jpg") -> dict:
        """One real request (real AWS only: moto's invoke needs Docker); its answer, or DeployFailed
        quoting it when the function failed or answered an error status."""
        answer, function_error = self.invoke(function_name, {"image": base64.b64encode(image.read_bytes()).decode()})
        if function_error:
            failure = f"function error {function_error}: {json.dumps(answer)}"
        elif isinstance(answer, dict) and answer.get("statusCode", 200) == 200:
            return answer
        else:  # direct invocations carry statusCode only on errors
            failure = f"it answered {json.dumps(answer)}"
        raise DeployFailed(f"smoke test of {function_name} failed: {failure}")

    # ---- whole operations -----------------------------------------------------------------

    def up(
        self,
        stack_name: str,
        bucket: str,
        zip_path: Path,
        model_path: Path,
        architecture: str = "x86_64",
        service_name: str = "fridge-detector",
        smoke: bool | None = None,
        **parameters,
    ) -> dict:
        validate_inputs(bucket, zip_path, model_path, architecture, service_name, stack_name)
        self.ensure_bucket(bucket)
        code_key, _ = self.upload(bucket, Path(zip_path), stack_name)
        model_key, model_sha = self.upload(bucket, Path(model_path), stack_name)
        outputs = self.apply(
            stack_name,
            {
                "ServiceName": service_name,
                "CodeBucket": bucket,
                "CodeKey": code_key,
                "ModelBucket": bucket,
                "ModelKey": model_key,
                "ModelSha256": model_sha,
                "Architecture": architecture,
                **parameters,
            },
        )
        self.log(json.dumps(outputs, indent=2))
        if smoke if smoke is not None else self.endpoint_url is None:
            result = self.smoke_test(outputs.get("AliasArn") or outputs["FunctionName"])
            self.log(f"smoke test: {json.dumps(result)[:300]}")
            outputs["smoke_test"] = result
        return outputs

    def down(self, stack_name: str, bucket: str) -> None:
        """Delete the stack, then every object this tool uploaded for it."""
        stack = self._stack(stack_name)
        if stack:
            earlier = self._event_ids(stack["StackId"])
            self.cloudformation.delete_stack(StackName=stack_name)
            self._wait_stack(stack["StackId"], "stack_delete_complete", earlier)
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{stack_name}/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                self.log(f"deleted {len(keys)} objects under s3://{bucket}/{stack_name}/")


def build_parser() -> argparse.ArgumentParser:
    layout = run_artifacts()
    parser = argparse.ArgumentParser(description="Deploy or tear down the detector stack.")
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--stack-name", default="fridge-detector")
    parser.add_argument("--service-name", default="fridge-detector")
    parser.add_argument("--bucket", required=True, help="S3 bucket for the zip and the model (created if missing)")
    parser.add_argument("--zip", type=Path, default=layout.zip("x86_64"))
    parser.add_argument(
        "--model",
        type=Path,
        default=layout.shipped,
        help="default: the model shipped.json names (helpers.export.ship), else model.onnx",
    )
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--memory", type=int, default=2048)
    parser.add_argument("--function-url", choices=("yes", "no"), default="no")
    parser.add_argument("--url-auth", choices=("AWS_IAM", "NONE"), default="AWS_IAM")
    parser.add_argument(
        "--snapstart",
        choices=("yes", "no"),
        default="no",
        help="publish a version with SnapStart behind the alias 'live' (invoke the alias)",
    )
    parser.add_argument(
        "--provisioned-concurrency",
        type=int,
        default=0,
        help="pre-initialised environments on the alias 'live' (not with --snapstart yes)",
    )
    parser.add_argument("--region")
    parser.add_argument("--endpoint-url", help="e.g. a moto server; default: real AWS")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.snapstart == "yes" and args.provisioned_concurrency:
        print("error: SnapStart cannot be combined with provisioned concurrency", file=sys.stderr)
        return 2
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        deployer = Deployer(args.region, args.endpoint_url)
        if args.action == "up":
            deployer.up(
                args.stack_name,
                args.bucket,
                args.zip,
                args.model,
                args.arch,
                args.service_name,
                MemorySize=str(args.memory),
                EnableFunctionUrl=args.function_url,
                FunctionUrlAuthType=args.url_auth,
                SnapStart=args.snapstart,
                ProvisionedConcurrency=str(args.provisioned_concurrency),
            )
        else:
            deployer.down(args.stack_name, args.bucket)
    except (DeployError, DeployFailed, BotoCoreError, ClientError) as err:  # WaiterError is a BotoCoreError
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
