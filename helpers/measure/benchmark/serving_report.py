"""BENCHMARKS.md's serving-levers and memory sections, from a run's Results."""

from __future__ import annotations

from helpers.measure.benchmark.results import Results
from helpers.measure.lambda_share import LAMBDA_PRICE, PERIOD_US, VCPU_MB, choose_memory
from helpers.measure.memory import LATENCY_BUDGET_MS, memory_table


def _interval(figure: dict) -> str:
    return f"{figure['estimate']:.3f} [{figure['low']:.2f}, {figure['high']:.2f}]"


def levers_section(results: Results) -> str:
    levers = results.levers
    if not levers:
        return "## Serving levers\n\nNot measured: no trained checkpoint given."
    fp32_peak, int8_peak = results.gemm_peak_gflops_2_threads, results.int8_gemm_peak_gops_2_threads
    rows = []
    for row in levers["rows"]:
        peak = int8_peak if row["int8"] else fp32_peak
        floor_ms = row["gflop"] / peak * 1e3  # the time at the GEMM peak: the ceiling of this graph
        shipped = " (shipped)" if row["lever"] == levers["shipped_lever"] else ""
        rows.append(
            f"| {row['lever']}{shipped} | {row['end_to_end']['p50_ms']:.1f} | {row['inference']['p50_ms']:.1f} "
            f"| {row['gflop']:.2f} | {floor_ms:.1f} | {_interval(row['map_50'])} | {_interval(row['map'])} |"
        )
    return "\n".join(
        [
            "## Serving levers (fasterrcnn_efficientnet_lite0_fpn, 0.3 MP JPEG, 2 threads, one at a time)",
            "",
            'Each lever was chosen on the validation images (docs/decisions.md, "The serving graph"); the accuracy '
            f"is on the {levers['images']} test images at the served threshold, with 95% bootstrap intervals. "
            "End to end = decode, letterbox, inference and restore of one request; the floor is the graph's GFLOP "
            f"(torch FlopCounterMode: convolutions and matrix products) at the GEMM peak measured in this run "
            f"({fp32_peak:.0f} GFLOP/s fp32, {int8_peak:.0f} GOP/s int8 on 2 threads).",
            "",
            "| graph | end to end p50 ms | inference p50 ms | GFLOP | floor at GEMM peak ms | test mAP@0.5 | test mAP |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Shipped: `{levers['shipped']}`: {levers['ship_reason']}.",
        ]
    )


def memory_section(results: Results) -> str:
    if not results.memory:
        why = results.skipped.get("memory table", "not run")
        return f"## Latency and cost by memory size\n\nNot measured in this run: {why}."
    chosen = choose_memory(results.memory, LATENCY_BUDGET_MS)
    return "\n".join(
        [
            "## Latency and cost by memory size (the shipped model, measured under Lambda's CPU share)",
            "",
            f"The handler in a child process per size, under a cgroup CPU quota of memory / {VCPU_MB} MB CPUs "
            f"per {PERIOD_US // 1000} ms period (helpers.measure.lambda_share), the 499x666 sample JPEG, after "
            f"its cold init and first request. Billed per 1 ms at {LAMBDA_PRICE['date']} (x86_64 "
            f"${LAMBDA_PRICE['x86_64_gb_second_usd']}/GB-s, ${LAMBDA_PRICE['per_million_requests_usd']} per 1M "
            "requests). This machine has 2 cores: shares above 2 vCPUs run at 2.",
            "",
            memory_table(results.memory),
            "",
            f"The rule (helpers.measure.lambda_share.choose_memory): the cheapest size that fits with p90 <= "
            f"{LATENCY_BUDGET_MS:.0f} ms: **{chosen['memory_mb']} MB** here. `python -m helpers memory "
            "--stack-name NAME` measures the same table on a deployed function from its REPORT lines.",
        ]
    )
