"""Batch detection: the local twin over real images (folder and S3), its resume and error lines, the
batch stack's template and policy, the collector on ResultWriter files shaped as AWS documents them, and
a Distributed Map run on moto over a prefix. The tiny detector answers (what is tested is the batching,
not the model)."""

import base64
import copy
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from unittest import mock

import boto3
import pytest
from cfnlint.decode import cfn_yaml

from helpers.aws import batch
from helpers.local.moto_aws import MotoDeployer, moto_server
from helpers.paths import SAMPLE_DIR
from helpers.runtime import storage
from helpers.runtime.config import SERVED_IMAGE_SUFFIXES
from helpers.runtime.errors import S3Unavailable

SAMPLE_IMAGES = sorted((SAMPLE_DIR / "images").glob("*.jpg"))
REGION = "eu-central-1"


@pytest.fixture
def image_folder(tmp_path):
    """The 6 real sample photos (one in a subfolder), a corrupt .jpg and a file that is not an image."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i, path in enumerate(SAMPLE_IMAGES):
        shutil.copy(path, folder / ("more" if i == 0 else ".") / path.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_key_without_latency(path: Path) -> dict:
    return {line["key"]: {k: v for k, v in line.items() if k != "latency_ms"} for line in _lines(path)}


def test_local_writes_one_line_per_image_reports_the_corrupt_one_and_resumes(image_folder, tiny_model, tmp_path):
    out = tmp_path / "results.jsonl"
    summary = batch.run_local(str(image_folder), tiny_model, out, workers=2, progress=False)
    lines = {line["key"]: line for line in _lines(out)}
    assert set(lines) == {f"more/{SAMPLE_IMAGES[0].name}", "broken.jpg", *(p.name for p in SAMPLE_IMAGES[1:])}
    assert lines["broken.jpg"]["status"] == 400 and "image" in lines["broken.jpg"]["error"]
    answered = [line for key, line in lines.items() if key != "broken.jpg"]
    assert all(line["status"] == 200 and line["image"] == {"width": 499, "height": 666} for line in answered)
    assert summary["images"] == 7 and summary["errors"] == 1 and summary["errors_by_status"] == {"400": 1}
    assert sum(summary["detections_by_label"].values()) == sum(len(line["detections"]) for line in answered) > 0

    # Again: nothing redone. Then an interrupted last line is dropped and that image is redone.
    before, lines_before = out.read_text(), _by_key_without_latency(out)
    again = batch.run_local(str(image_folder), tiny_model, out, workers=1, progress=False)
    assert again["this_run"]["images"] == 0 and again["skipped_already_done"] == 7 and out.read_text() == before
    kept, last = before.splitlines(keepends=True)[:-1], before.splitlines()[-1]
    out.write_text("".join(kept) + last[: len(last) // 2])
    resumed = batch.run_local(str(image_folder), tiny_model, out, workers=1, progress=False)
    assert resumed["this_run"]["images"] == 1 and len(_lines(out)) == 7
    assert _by_key_without_latency(out) == lines_before


def test_one_worker_and_two_give_the_same_detections(image_folder, tiny_model, tmp_path):
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    batch.run_local(str(image_folder), tiny_model, one, workers=1, progress=False)
    batch.run_local(str(image_folder), tiny_model, two, workers=2, progress=False)
    assert _by_key_without_latency(one) == _by_key_without_latency(two)


def test_local_reads_an_s3_prefix_with_the_same_event_the_state_machine_sends(tiny_model, tmp_path, monkeypatch):
    with moto_server(REGION) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)  # the handler's own S3 client, as in Lambda
        s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
        for path in SAMPLE_IMAGES[:3]:
            s3.put_object(Bucket="photos", Key=f"shelf/{path.name}", Body=path.read_bytes())
        s3.put_object(Bucket="photos", Key="elsewhere/x.jpg", Body=SAMPLE_IMAGES[0].read_bytes())
        out = tmp_path / "s3.jsonl"
        batch.run_local("s3://photos/shelf/", tiny_model, out, workers=2, progress=False)
        assert sorted(line["key"] for line in _lines(out)) == [f"shelf/{p.name}" for p in SAMPLE_IMAGES[:3]]
        assert all(line["status"] == 200 for line in _lines(out))
        assert batch.main(["local", "s3://photos/nothing-here/", "--model", str(tiny_model), "--out", str(out)]) == 2


def test_cli_refuses_bad_input_with_one_line_and_exit_2(capsys, tmp_path, image_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_text("not onnx")
    real_model = tmp_path / "unused.onnx"
    cases = [
        (["local", str(tmp_path / "missing")], f"error: not a folder or s3:// location: {tmp_path / 'missing'}"),
        (
            ["local", str(empty), "--model", str(not_a_model)],
            f"error: no images ({', '.join(sorted(SERVED_IMAGE_SUFFIXES))}) under {empty}",
        ),
        (["local", str(image_folder), "--model", str(real_model)], f"error: model not found: {real_model}"),
    ]
    for argv, message in cases:
        assert batch.main([*argv, "--out", str(tmp_path / "r.jsonl")]) == 2
        assert capsys.readouterr().err.strip() == message
    assert (
        batch.main(["local", str(image_folder), "--model", str(not_a_model), "--out", str(tmp_path / "r.jsonl")]) == 2
    )
    assert capsys.readouterr().err.strip().startswith(f"error: cannot load model {not_a_model}:")
    assert not (tmp_path / "r.jsonl").exists()  # nothing was started


def test_batch_template_is_lint_clean_and_least_privilege():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    linted = subprocess.run([str(cfn_lint), str(batch.BATCH_TEMPLATE)], capture_output=True, text=True)
    assert linted.returncode == 0 and linted.stdout.strip() == "", linted.stdout + linted.stderr
    resources = cfn_yaml.load(str(batch.BATCH_TEMPLATE))["Resources"]
    statements = {
        s["Sid"]: s for s in resources["StateMachineRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    }
    for statement in statements.values():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not [a for a in actions if "*" in a]
    listing = statements["ListTheInputPrefixOnly"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": {"Fn::Sub": "${InputPrefix}*"}}}
    assert statements["InvokeTheDetectorOnly"]["Action"] == "lambda:InvokeFunction"
    writer = statements["WriteResultsUnderTheResultsPrefixOnly"]
    assert writer["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ResultsBucket}/${ResultsPrefix}/*"}
    # The only wildcards: the objects under the two prefixes, the function's versions, and the map's own
    # child executions (Distributed Map names them at run time).
    wildcards = [json.dumps(s["Resource"]) for s in statements.values() if "*" in json.dumps(s["Resource"])]
    assert len(wildcards) == 3
    read = resources["DetectorReadsInput"]["Properties"]
    assert read["Roles"] == [{"Fn::Sub": "${DetectorName}-execution"}]
    assert read["PolicyDocument"]["Statement"] == [
        {
            "Sid": "ReadInputImagesOnly",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${InputBucket}/${InputPrefix}*"},
        }
    ]


def _result_writer_files(s3, bucket: str, run_id: str, handler_responses: dict) -> str:
    """ResultWriter output as AWS documents it (built here; moto writes only the manifest): a manifest
    naming SUCCEEDED_0.json and FAILED_0.json, each a JSON array of child executions."""
    prefix = f"batch-results/{run_id}"
    succeeded = [
        {
            "ExecutionArn": f"arn:aws:states:{REGION}:123456789012:execution:fridge-detector-batch/{run_id}:{i}",
            "Input": json.dumps({"Etag": '"x"', "Key": key, "Size": 1, "StorageClass": "STANDARD"}),
            "InputDetails": {"Included": True},
            "Output": json.dumps(response),
            "OutputDetails": {"Included": True},
            "Status": "SUCCEEDED",
        }
        for i, (key, response) in enumerate(handler_responses.items())
    ]
    failed = [
        {
            "Input": json.dumps({"Key": "shelf/timed-out.jpg"}),
            "Error": "Lambda.Unknown",
            "Cause": "The function timed out",
            "Status": "FAILED",
        }
    ]
    files = {"SUCCEEDED": f"{prefix}/SUCCEEDED_0.json", "FAILED": f"{prefix}/FAILED_0.json"}
    s3.put_object(Bucket=bucket, Key=files["SUCCEEDED"], Body=json.dumps(succeeded))
    s3.put_object(Bucket=bucket, Key=files["FAILED"], Body=json.dumps(failed))
    manifest = {
        "DestinationBucket": bucket,
        "MapRunArn": f"arn:aws:states:{REGION}:123456789012:mapRun:fridge-detector-batch/x:{run_id}",
        "ResultFiles": {
            "FAILED": [{"Key": files["FAILED"], "Size": 1}],
            "PENDING": [],
            "SUCCEEDED": [{"Key": files["SUCCEEDED"], "Size": 1}],
        },
    }
    s3.put_object(Bucket=bucket, Key=f"{prefix}/manifest.json", Body=json.dumps(manifest))
    return f"{prefix}/manifest.json"


def test_collector_turns_result_writer_files_into_the_local_lines(tiny_model, sample_jpegs):
    from helpers.runtime import handler as h

    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""})
    responses = {
        f"shelf/{name}": h.handler({"image": base64.b64encode(data).decode()}, None)
        for name, data in sample_jpegs.items()
    }
    responses["shelf/broken.jpg"] = h.handler({"image": base64.b64encode(b"broken").decode()}, None)
    with moto_server(REGION) as url:
        s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        s3.create_bucket(Bucket="results", CreateBucketConfiguration={"LocationConstraint": REGION})
        manifest = _result_writer_files(s3, "results", "run-1", responses)
        lines = {line["key"]: line for line in batch.collect_result_writer(s3, "results", manifest)}
    assert set(lines) == {*responses, "shelf/timed-out.jpg"}
    for key, response in responses.items():  # the line format, written out (not result_line's own output)
        if key == "shelf/broken.jpg":
            assert lines[key] == {"key": key, "status": 400, "error": response["error"]}
        else:
            assert lines[key] == {
                "key": key,
                "status": 200,
                "detections": response["detections"],
                "image": {"width": 499, "height": 666},
                "latency_ms": response["timings_ms"]["total"],
            }
    assert lines["shelf/timed-out.jpg"] == {
        "key": "shelf/timed-out.jpg",
        "status": None,
        "error": "FAILED: Lambda.Unknown: The function timed out",
    }


@pytest.fixture
def moto_executing_step_functions():
    """moto's executing Step Functions and its Docker-free Lambda, restored afterwards (the setting is global)."""
    from moto.core.config import default_user_config

    saved = copy.deepcopy(default_user_config)
    yield {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    default_user_config.clear()
    default_user_config.update(saved)


def test_distributed_map_on_moto_reaches_exactly_the_prefix_keys_and_retries_s3_outages(
    made_up_zip, tiny_model, tmp_path, monkeypatch, moto_executing_step_functions
):
    """What moto can run: the stacks deploy; the map lists the prefix (ItemReader listObjectsV2) and invokes
    the task once per key under it, with the handler's S3 event; an S3 outage the handler raises is retried
    by the template's Retry; the manifest lands where `run` looks. What
    it cannot: its result files (ResultFiles stays empty, see the collector test), and Lambda code (a spy
    here answers each invocation with the real handler, reading the image from moto's S3)."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    from helpers.runtime import handler as h

    with moto_server(REGION) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
        MotoDeployer(REGION, url, log=lambda *_: None).up(
            "fridge-detector", "artifacts", made_up_zip, tiny_model, "x86_64", "fridge-detector"
        )
        s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
        for path in SAMPLE_IMAGES:
            s3.put_object(Bucket="photos", Key=f"shelf/{path.name}", Body=path.read_bytes())
        s3.put_object(Bucket="photos", Key="shelf/broken.jpg", Body=b"not a jpeg")
        s3.put_object(Bucket="photos", Key="shelves-other/x.jpg", Body=b"x")
        s3.put_object(Bucket="photos", Key="other/y.jpg", Body=b"y")
        prefix_keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="photos", Prefix="shelf/")["Contents"])

        deploy = ["deploy", "--endpoint-url", url, "--region", REGION, "--input-bucket", "photos"]
        deploy += ["--input-prefix", "shelf/", "--results-bucket", "photos", "--child-execution-type", "STANDARD"]
        assert batch.main(deploy) == 0  # moto's grammar knows only STANDARD child executions
        sfn = boto3.client("stepfunctions", endpoint_url=url, region_name=REGION)
        machine = sfn.describe_state_machine(
            stateMachineArn=batch.batch_stack(batch._Clients(REGION, url), "fridge-detector-batch")["StateMachineArn"]
        )
        definition = json.loads(machine["definition"])["States"]["DetectEachImage"]
        assert definition["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
        assert definition["ToleratedFailurePercentage"] == 5.0 and definition["MaxConcurrency"] == 40

        # moto runs state machines in a second backend that CloudFormation does not write to: the
        # definition CloudFormation rendered is registered there under the same name (same ARN).
        config = json.dumps(moto_executing_step_functions).encode()
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/config", data=config, method="POST")).close()
        sfn.create_state_machine(name=machine["name"], definition=machine["definition"], roleArn=machine["roleArn"])

        h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""})
        invoked = []
        flaky_key, outages = prefix_keys[1], [1, 2]  # S3 fails this key's first two reads
        read_image = storage.read_image

        def flaky_s3(bucket, key, limit):
            if key == flaky_key and outages:
                outages.pop()
                raise S3Unavailable(f"S3 cannot be reached for s3://{bucket}/{key} (ConnectTimeoutError); retry")
            return read_image(bucket, key, limit)

        def detector(self, function_name, qualifier, body, headers, response_headers):
            """The handler as the Lambda runtime runs it: an exception becomes a function error."""
            event = json.loads(body)
            invoked.append((function_name, event))
            try:
                return json.dumps(h.handler(event, None)).encode()
            except Exception as err:
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(err).__name__, "errorMessage": str(err)}).encode()

        out = tmp_path / "aws.jsonl"
        with (
            mock.patch.object(LambdaSimpleBackend, "invoke", detector),
            mock.patch.object(storage, "read_image", flaky_s3),
        ):
            code = batch.main(
                [
                    "run",
                    "--endpoint-url",
                    url,
                    "--region",
                    REGION,
                    "--bucket",
                    "photos",
                    "--prefix",
                    "shelf/",
                    "--out",
                    str(out),
                ]
            )
        assert code == 0
        # Every key once, the flaky one three times: twice S3Unavailable, retried by the map, then answered.
        assert sorted(event["s3"]["key"] for _, event in invoked) == sorted([*prefix_keys, flaky_key, flaky_key])
        assert all(event["raise_retryable"] is True for _, event in invoked) and not outages
        assert {event["s3"]["bucket"] for _, event in invoked} == {"photos"}
        assert all(name.endswith(":function:fridge-detector") for name, _ in invoked)
        summary = json.loads(Path(f"{out}.summary.json").read_text())
        assert summary["execution_status"] == "SUCCEEDED"
        assert summary["map_run_item_counts"]["total"] == len(prefix_keys)
        bucket, key = summary["manifest"].removeprefix("s3://").split("/", 1)
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert key.startswith("batch-results/") and manifest["MapRunArn"].endswith(key.split("/")[1])

        # Input outside the stack's prefix, or an empty prefix: refused before anything starts.
        for prefix in ("other/", "shelf/none/"):
            assert (
                batch.main(["run", "--endpoint-url", url, "--region", REGION, "--bucket", "photos", "--prefix", prefix])
                == 2
            )
