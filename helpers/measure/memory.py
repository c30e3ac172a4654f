"""Which MemorySize to deploy: the handler's latency and cost at each size, measured, and the size chosen.

    python -m helpers memory [--model M.onnx] [--sizes 128,...] [--requests 10] [--budget-ms 100] [--full]
        here: the handler under each size's CPU share (helpers.measure.lambda_share; needs root)
    python -m helpers memory --stack-name fridge-detector [--region R]
        a deployed function: MemorySize set per size, Billed Duration read from REPORT lines
        (helpers.measure.deployed_sweep; costs a few cents of invocations)

The choice: the cheapest size that fits the peak memory with p90 within the budget
(helpers.measure.lambda_share.choose_memory), printed as `MEMORY_MB=...` for `helpers deploy up --memory`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.measure import deployed_sweep, lambda_share
from helpers.paths import SAMPLE_DIR, not_found, quick_unless

LATENCY_BUDGET_MS = 100.0


def memory_table(rows: list[dict]) -> str:
    """The rows as a markdown table, one line per size."""
    lines = [
        "| memory MB | vCPUs | first request ms | p50 ms | p90 ms | USD per 1M requests | peak RSS MiB | periods throttled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = r.get("vcpus")
        capped = share is not None and r.get("quota_cpus", share) < share
        vcpus = "-" if share is None else f"{share:.2f}" + (f" (capped at {r['quota_cpus']:.0f})" if capped else "")
        rss = f"{r['peak_rss_mb']:.0f}" + ("" if r["fits"] else " (does not fit)")
        lines.append(
            f"| {r['memory_mb']} | {vcpus} | {r['first_ms']:.0f} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} "
            f"| {r['usd_per_million']:.2f} | {rss} | {r.get('throttled_periods', '-')} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers memory", description=__doc__)
    parser.add_argument("--model", type=Path, help="default: the model that ships (helpers.export.ship)")
    parser.add_argument("--image", type=Path, default=SAMPLE_DIR / "images" / "10.jpg")
    parser.add_argument("--sizes", help="comma-separated MB (default: 128 to 10,240 here, 512 to 10,240 on AWS)")
    parser.add_argument("--requests", type=int, default=10, help="warm requests per size")
    parser.add_argument("--budget-ms", type=float, default=LATENCY_BUDGET_MS, help="p90 latency budget")
    parser.add_argument("--stack-name", help="sweep this deployed stack's function instead of this machine")
    parser.add_argument("--region")
    parser.add_argument("--full", action="store_true", help="full mode's model (default: quick, as `make run`)")
    return parser


def _deployed(args, sizes) -> list[dict]:
    from helpers.aws.deploy import Deployer

    deployer = Deployer(args.region)
    function = deployer.outputs(args.stack_name)["FunctionName"]
    return deployed_sweep.sweep(
        deployer.lambda_, function, sizes or deployed_sweep.SWEEP_SIZES, args.requests, args.image
    )


def _local(args, sizes) -> list[dict]:
    if args.model is None:
        from helpers.pipeline.steps import Series

        args.model = Series.from_parameters(quick=quick_unless(args.full)).ensure_shipped()
    if not args.model.is_file():
        raise FileNotFoundError(not_found("model", args.model, quick_unless(args.full)))
    return lambda_share.sweep(args.model, args.image, sizes or lambda_share.MEMORY_SIZES, args.requests)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    except ValueError:
        print(f"error: --sizes must be comma-separated whole MB, not {args.sizes!r}", file=sys.stderr)
        return 2
    try:
        rows = _deployed(args, sizes) if args.stack_name else _local(args, sizes)
    except (RuntimeError, FileNotFoundError, BotoCoreError, ClientError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    print(memory_table(rows))
    chosen = lambda_share.choose_memory(rows, args.budget_ms)
    print(f"MEMORY_MB={chosen['memory_mb']}  (cheapest size that fits with p90 <= {args.budget_ms:.0f} ms)")
    return 0
