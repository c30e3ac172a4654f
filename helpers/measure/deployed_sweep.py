"""The memory table against a deployed function: set each MemorySize, invoke, read Lambda's REPORT lines.

What helpers.measure.lambda_share measures on this machine under an emulated CPU share, measured where
it is billed (as aws-lambda-power-tuning does): Duration and Billed Duration come from the REPORT line
of each invocation's log tail (`LogType=Tail`), so the cost is the billed one, not an estimate. The
function's own MemorySize is put back at the end, also when a step fails. Invokes the unqualified
function ($LATEST): an alias on a published version (SnapStart, provisioned concurrency) keeps its memory.

    python -m helpers memory --stack-name NAME [--sizes 512,1024,...] [--requests 10]
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from helpers.measure.lambda_share import usd_per_million
from helpers.measure.timing import percentiles
from helpers.paths import SAMPLE_DIR

_FIELDS = {
    "duration_ms": r"\tDuration: ([\d.]+) ms",
    "billed_ms": r"Billed Duration: (\d+) ms",
    "memory_mb": r"Memory Size: (\d+) MB",
    "max_memory_used_mb": r"Max Memory Used: (\d+) MB",
    "init_ms": r"Init Duration: ([\d.]+) ms",
}
SWEEP_SIZES = (512, 1024, 1536, 1769, 2048, 3008, 3538, 4096, 6144, 10240)


class SweepError(RuntimeError):
    """An invocation that answered no REPORT line or failed: the sweep stops and says which."""


def parse_report(log_tail: str) -> dict[str, float | None]:
    """The REPORT line of a Lambda log tail as numbers; init_ms is None on a warm invocation."""
    line = next((line for line in log_tail.splitlines() if line.startswith("REPORT ")), None)
    if line is None:
        raise SweepError("no REPORT line in the log tail")
    figures = {}
    for name, pattern in _FIELDS.items():
        match = re.search(pattern, "\t" + line.removeprefix("REPORT "))
        if match is None and name != "init_ms":
            raise SweepError(f"the REPORT line has no {name}: {line!r}")
        figures[name] = float(match.group(1)) if match else None
    return figures


def _invoke(client, function_name: str, payload: bytes) -> dict:
    response = client.invoke(FunctionName=function_name, Payload=payload, LogType="Tail")
    if response.get("FunctionError"):
        raise SweepError(f"{function_name} failed: {response['Payload'].read()[:300]!r}")
    return parse_report(base64.b64decode(response["LogResult"]).decode())


def _set_memory(client, function_name: str, memory_mb: int) -> None:
    client.update_function_configuration(FunctionName=function_name, MemorySize=memory_mb)
    client.get_waiter("function_updated_v2").wait(FunctionName=function_name)


def measure_size(client, function_name: str, memory_mb: int, payload: bytes, requests: int) -> dict:
    """One size: the first invocation after the change (a cold start, its Init Duration) and `requests`
    warm ones, as the rows of helpers.measure.lambda_share."""
    _set_memory(client, function_name, memory_mb)
    first = _invoke(client, function_name, payload)
    warm = [_invoke(client, function_name, payload) for _ in range(requests)]
    billed = sum(r["billed_ms"] for r in warm) / len(warm)
    used = max(r["max_memory_used_mb"] for r in [first, *warm])
    return {
        "memory_mb": memory_mb,
        "init_ms": first["init_ms"],
        "first_ms": first["duration_ms"],
        **percentiles([r["duration_ms"] for r in warm]),
        "billed_ms": billed,
        "usd_per_million": usd_per_million(billed, memory_mb),
        "peak_rss_mb": used,
        "fits": used < memory_mb,
    }


def sweep(client, function_name: str, sizes=SWEEP_SIZES, requests: int = 10, image: Path | None = None) -> list[dict]:
    """measure_size at every size, smallest first; the function's MemorySize restored afterwards."""
    image = image or SAMPLE_DIR / "images" / "10.jpg"
    payload = json.dumps({"image": base64.b64encode(image.read_bytes()).decode()}).encode()
    original = client.get_function_configuration(FunctionName=function_name)["MemorySize"]
    try:
        return [measure_size(client, function_name, size, payload, requests) for size in sorted(sizes)]
    finally:
        _set_memory(client, function_name, original)
