"""The memory sweep against a deployed function (helpers.measure.deployed_sweep), on canned REPORT lines:
what Lambda's log tail says is what the table bills, and the function's own MemorySize comes back."""

import base64
import io
import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from helpers.measure import deployed_sweep
from helpers.measure.deployed_sweep import SweepError, parse_report
from helpers.measure.lambda_share import usd_per_million

COLD = (
    "START RequestId: 6f1c Version: $LATEST\n"
    "END RequestId: 6f1c\n"
    "REPORT RequestId: 6f1c\tDuration: 61.37 ms\tBilled Duration: 62 ms\tMemory Size: 1024 MB\t"
    "Max Memory Used: 181 MB\tInit Duration: 412.08 ms\t\n"
)
WARM = "REPORT RequestId: 7a2d\tDuration: {ms} ms\tBilled Duration: {billed} ms\tMemory Size: {mb} MB\tMax Memory Used: 183 MB\t\n"


def test_a_report_line_reads_as_numbers_and_a_warm_one_has_no_init():
    assert parse_report(COLD) == {
        "duration_ms": 61.37,
        "billed_ms": 62.0,
        "memory_mb": 1024.0,
        "max_memory_used_mb": 181.0,
        "init_ms": 412.08,
    }
    assert parse_report(WARM.format(ms=20.5, billed=21, mb=512))["init_ms"] is None


@pytest.mark.parametrize(
    "tail", ["START RequestId: 1\nEND RequestId: 1\n", "REPORT RequestId: 1\tMemory Size: 512 MB\n"]
)
def test_a_tail_without_a_complete_report_line_is_an_error(tail):
    with pytest.raises(SweepError):
        parse_report(tail)


def _invocation(tail: str) -> dict:
    return {"StatusCode": 200, "LogResult": base64.b64encode(tail.encode()).decode(), "Payload": io.BytesIO(b"{}")}


def test_the_sweep_sets_each_size_bills_the_warm_requests_and_restores_the_memory(sample_records):
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    name = "fridge-detector"
    updated = {"FunctionName": name, "MemorySize": 2048, "State": "Active", "LastUpdateStatus": "Successful"}
    with Stubber(client) as stub:
        stub.add_response("get_function_configuration", {"MemorySize": 2048}, {"FunctionName": name})
        for size, warm in ((512, (40.2, 35.9)), (1024, (21.3, 20.1))):
            stub.add_response("update_function_configuration", {}, {"FunctionName": name, "MemorySize": size})
            stub.add_response("get_function", {"Configuration": updated}, {"FunctionName": name})
            stub.add_response("invoke", _invocation(COLD), {"FunctionName": name, "Payload": ANY, "LogType": "Tail"})
            for ms in warm:
                tail = WARM.format(ms=ms, billed=int(ms) + 1, mb=size)
                stub.add_response(
                    "invoke", _invocation(tail), {"FunctionName": name, "Payload": ANY, "LogType": "Tail"}
                )
        stub.add_response("update_function_configuration", {}, {"FunctionName": name, "MemorySize": 2048})
        stub.add_response("get_function", {"Configuration": updated}, {"FunctionName": name})
        rows = deployed_sweep.sweep(client, name, sizes=(1024, 512), requests=2, image=sample_records[0].image_path)
        stub.assert_no_pending_responses()
    assert [r["memory_mb"] for r in rows] == [512, 1024]
    small = rows[0]
    assert small["init_ms"] == 412.08 and small["first_ms"] == 61.37
    assert small["billed_ms"] == (41 + 36) / 2
    assert small["usd_per_million"] == pytest.approx(usd_per_million((41 + 36) / 2, 512))
    assert small["peak_rss_mb"] == 183 and small["fits"]
    assert json.dumps(rows)  # the table is plain data, as results.json keeps it


def test_a_failed_invocation_stops_the_sweep_and_still_restores_the_memory(sample_records):
    client = boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    name = "fridge-detector"
    updated = {"FunctionName": name, "State": "Active", "LastUpdateStatus": "Successful"}
    failed = {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(b'{"errorMessage": "boom"}')}
    with Stubber(client) as stub:
        stub.add_response("get_function_configuration", {"MemorySize": 3008}, {"FunctionName": name})
        stub.add_response("update_function_configuration", {}, {"FunctionName": name, "MemorySize": 512})
        stub.add_response("get_function", {"Configuration": updated}, {"FunctionName": name})
        stub.add_response("invoke", failed, {"FunctionName": name, "Payload": ANY, "LogType": "Tail"})
        stub.add_response("update_function_configuration", {}, {"FunctionName": name, "MemorySize": 3008})
        stub.add_response("get_function", {"Configuration": updated}, {"FunctionName": name})
        with pytest.raises(SweepError, match="boom"):
            deployed_sweep.sweep(client, name, sizes=(512,), requests=1, image=sample_records[0].image_path)
        stub.assert_no_pending_responses()
