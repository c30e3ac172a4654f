"""The one JSON line per image that both batch modes write: from the handler's response (`local`, in
process) or from the files a Distributed Map's ResultWriter left in S3 (`run`, on AWS)."""

from __future__ import annotations

import json


def result_line(key: str, response: dict) -> dict:
    """One output line from the handler's direct response (success, or a 4xx/5xx error body)."""
    if "error" in response:
        return {"key": key, "status": response.get("statusCode"), "error": response["error"]}
    return {
        "key": key,
        "status": 200,
        "detections": response["detections"],
        "image": response["image"],
        "latency_ms": response.get("timings_ms", {}).get("total"),
    }


def collect_result_writer(s3, bucket: str, manifest_key: str) -> list[dict]:
    """The lines of a Distributed Map run from its ResultWriter output: manifest.json names the
    SUCCEEDED_n / FAILED_n / PENDING_n files, each a JSON array of child executions with their Input
    (here {"Key": ...}) and Output (the handler's response) as JSON strings, or Error and Cause."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    lines = []
    for status, files in manifest.get("ResultFiles", {}).items():
        for file in files:
            for entry in json.loads(
                s3.get_object(Bucket=manifest["DestinationBucket"], Key=file["Key"])["Body"].read()
            ):
                key = json.loads(entry["Input"])["Key"]
                if status == "SUCCEEDED":
                    lines.append(result_line(key, json.loads(entry["Output"])))
                else:
                    reason = ": ".join(filter(None, [entry.get("Error"), entry.get("Cause")])) or status
                    lines.append({"key": key, "status": None, "error": f"{status}: {reason}"})
    return lines
