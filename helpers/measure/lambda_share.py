"""The memory table measured, not assumed: the handler run under Lambda's CPU share for each memory size.

Lambda gives a function CPU in proportion to its memory: 1 vCPU at 1,769 MB, up to 6 vCPUs at 10,240 MB
(AWS Lambda developer guide, "Memory and computing power"). A fractional share is a quota per period
(Firecracker's vCPUs under Linux CFS bandwidth control): work that overruns its quota in a period waits
for the next one, so latency does not grow in proportion. Here each size runs the handler in a child
process inside a cgroup (v1 `cpu` controller or v2 `cpu.max`) whose quota is the size's share of a
100 ms period, Linux's default (Lambda does not document its period). The child sees this machine's
cores, as a Lambda sees its visible cores whatever its share; shares above this machine's cores are
capped at them (said in the table). Needs write access to the cgroup tree (root); `available()` says
why not. The command: `python -m helpers memory` (helpers.measure.memory).
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from helpers.measure.timing import percentiles

#: Lambda's documented rate: 1 vCPU per 1,769 MB, at most 6 vCPUs.
VCPU_MB = 1769
MAX_VCPUS = 6
PERIOD_US = 100_000
#: 128 MB to 10,240 MB (Lambda's range): the sizes the benchmark measures.
MEMORY_SIZES = (128, 256, 512, 768, 1024, 1536, 1769, 2048, 3008, 3538, 4096, 6144, 8192, 10240)
LAMBDA_PRICE = {  # AWS list prices, us-east-1 on-demand, x86_64; this machine is offline and cannot
    # re-check them: verify on aws.amazon.com/lambda/pricing
    "date": "Dec 2020 list prices (the newest this offline machine knows; check aws.amazon.com/lambda/pricing)",
    "x86_64_gb_second_usd": 0.0000166667,
    "arm64_gb_second_usd": 0.0000133334,
    "per_million_requests_usd": 0.20,
}
_V1_ROOT, _V2_ROOT = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")


def cpu_share(memory_mb: int) -> float:
    """vCPUs Lambda gives `memory_mb` (fractional below 1,769 MB)."""
    return min(MAX_VCPUS, memory_mb / VCPU_MB)


def usd_per_million(billed_ms: float, memory_mb: int, arch: str = "x86_64") -> float:
    """USD per 1M requests billed `billed_ms` each (Lambda bills per 1 ms) at `memory_mb`."""
    compute = billed_ms / 1e3 * memory_mb / 1024 * LAMBDA_PRICE[f"{arch}_gb_second_usd"]
    return 1e6 * compute + LAMBDA_PRICE["per_million_requests_usd"]


def _cgroup_parent() -> tuple[Path, str] | None:
    """Where a child cgroup with a CPU quota can be made, and the cgroup version there."""
    if (_V1_ROOT / "cpu.cfs_quota_us").is_file():
        return _V1_ROOT, "v1"
    subtree = _V2_ROOT / "cgroup.subtree_control"
    if subtree.is_file() and "cpu" in subtree.read_text().split():
        return _V2_ROOT, "v2"
    return None


def available() -> str | None:
    """None when a CPU quota can be set here, else why not (one line)."""
    parent = _cgroup_parent()
    if parent is None:
        return "no cgroup cpu controller mounted (v1 /sys/fs/cgroup/cpu or v2 cpu in subtree_control)"
    if not os.access(parent[0], os.W_OK):
        return f"{parent[0]} is not writable (setting a CPU quota needs root)"
    return None


@contextmanager
def cpu_quota(cpus: float):
    """A fresh cgroup limited to `cpus` CPUs per PERIOD_US; yields its folder (a pid written to its
    cgroup.procs moves there; cpu.stat counts the periods in which it was throttled)."""
    root, version = _cgroup_parent()
    group = root / f"helpers-share-{os.getpid()}"
    group.mkdir()
    quota = max(1000, round(cpus * PERIOD_US))  # the kernel's floor is 1 ms
    try:
        if version == "v1":
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        yield group
    finally:
        for _ in range(50):  # the child has exited; the kernel frees the group a moment later
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.02)


def _worker() -> None:
    """In the child: wait until placed in the cgroup, then a cold init, the first request (a cold start's
    own) and `requests` warm ones, each after a pause (requests reach a Lambda apart), as one JSON line."""
    job = json.loads(sys.stdin.readline())
    from helpers.runtime import handler

    started = time.perf_counter()
    handler.init({"MODEL_PATH": job["model"], "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""})
    init_ms = (time.perf_counter() - started) * 1e3
    event = {"image": base64.b64encode(Path(job["image"]).read_bytes()).decode()}
    latencies = []
    for _ in range(1 + job["requests"]):
        time.sleep(0.2)
        started = time.perf_counter()
        answer = handler.handler(event, None)
        latencies.append((time.perf_counter() - started) * 1e3)
        if "detections" not in answer:
            raise RuntimeError(f"the handler answered {answer}")
    peak_mb = _peak_rss_mb()
    figures = {"init_ms": init_ms, "first_ms": latencies[0], "latencies_ms": latencies[1:], "peak_rss_mb": peak_mb}
    print(json.dumps(figures), flush=True)


def _peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM). Not getrusage's ru_maxrss: Linux carries the high
    water mark of the process it was forked from across exec, a notebook kernel's 900 MB included."""
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM:")).split()[1]) / 1024


def run_at(memory_mb: int, model: Path, image: Path, requests: int) -> dict:
    """One memory size: the handler in a child process under that size's CPU share."""
    share = cpu_share(memory_mb)
    cores = os.cpu_count() or 1
    with cpu_quota(min(share, cores)) as group:
        child = subprocess.Popen(
            [sys.executable, "-m", "helpers.measure.lambda_share", "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        (group / "cgroup.procs").write_text(str(child.pid))
        job = {"model": str(model), "image": str(image), "requests": requests}
        out, _ = child.communicate(json.dumps(job) + "\n", timeout=600)
        throttled = _throttled_periods(group)
    if child.returncode:
        raise RuntimeError(f"the handler at {memory_mb} MB exited with {child.returncode}")
    figures = json.loads(out.strip().splitlines()[-1])
    latencies = figures["latencies_ms"]
    billed = sum(math.ceil(x) for x in latencies) / len(latencies)  # Lambda bills each request per 1 ms
    return {
        "memory_mb": memory_mb,
        "vcpus": round(share, 3),
        "quota_cpus": round(min(share, cores), 3),
        "init_ms": figures["init_ms"],
        "first_ms": figures["first_ms"],
        **percentiles(latencies),
        "usd_per_million": usd_per_million(billed, memory_mb),
        "peak_rss_mb": figures["peak_rss_mb"],
        "fits": figures["peak_rss_mb"] <= memory_mb,
        "throttled_periods": throttled,
    }


def _throttled_periods(group: Path) -> int:
    """Periods in which the group ran out of quota (v1 nr_throttled, v2 nr_throttled in cpu.stat)."""
    stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines() if line.strip())
    return int(stat.get("nr_throttled", 0))


def sweep(model: Path, image: Path, sizes=MEMORY_SIZES, requests: int = 10) -> list[dict]:
    """run_at for every size, smallest first (raises RuntimeError with `available()`'s reason)."""
    if reason := available():
        raise RuntimeError(f"cannot set a CPU quota: {reason}")
    rows = []
    for memory_mb in sorted(sizes):
        print(f"memory sweep: {memory_mb} MB ...", flush=True)
        rows.append(run_at(memory_mb, model, image, requests))
    return rows


def choose_memory(rows: list[dict], latency_budget_ms: float) -> dict:
    """The cheapest size that fits its peak memory and whose p90 is within the budget (the smaller size
    on a tie); the fastest fitting size when none is."""
    fitting = [r for r in rows if r.get("fits", True)] or rows
    within = [r for r in fitting if r["p90_ms"] <= latency_budget_ms]
    if not within:
        return min(fitting, key=lambda r: (r["p90_ms"], r["memory_mb"]))
    return min(within, key=lambda r: (r["usd_per_million"], r["memory_mb"]))


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker()
