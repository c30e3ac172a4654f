"""Batch detection: every image under a folder or an S3 prefix, one JSON line per image.

    python -m helpers batch local DIR_OR_S3_URI [--model M] [--out results.jsonl] [--workers N]
    python -m helpers batch deploy --input-bucket B [--input-prefix P] --results-bucket R [...]
    python -m helpers batch run --bucket B --prefix P [--out results.jsonl]

`local` runs the handler in-process over a pool sized to the CPUs (this is also how to batch without
AWS); `run` starts the batch stack's Step Functions Distributed Map (cloudformation/batch.yaml), which
invokes the deployed function once per object, and collects what its ResultWriter wrote. Both write the
same lines:

    {"key": "shelf/10.jpg", "status": 200, "detections": [...], "image": {...}, "latency_ms": 58.1}
    {"key": "shelf/broken.jpg", "status": 400, "error": "cannot decode image: ..."}

An image the handler refuses is one error line; the run goes on. `local` resumes: keys already in the
output are skipped, except those whose line is a 5xx (retryable), which are redone.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from helpers.aws.deploy import Deployer, DeployError
from helpers.aws.result_lines import collect_result_writer, result_line
from helpers.paths import PROJECT_ROOT, not_found, run_artifacts
from helpers.runtime.config import SERVED_IMAGE_SUFFIXES
from helpers.runtime.s3uri import parse_s3_prefix

BATCH_TEMPLATE = PROJECT_ROOT / "cloudformation" / "batch.yaml"
POLL_SECONDS = 2.0


class BatchInputError(ValueError):
    """Input that cannot be batched (missing folder, empty prefix, unreadable model): exit 2."""


class BatchFailed(RuntimeError):
    """The execution ended without a map run, so without results to collect: exit 1."""


# ---- result lines ---------------------------------------------------------------------------


def summarize(lines: list[dict]) -> dict:
    """Counts by label, errors by status, and handler latency percentiles over `lines`."""
    ok = [line for line in lines if line["status"] == 200]
    latencies = [line["latency_ms"] for line in ok if line.get("latency_ms") is not None]
    return {
        "images": len(lines),
        "answered": len(ok),
        "errors": len(lines) - len(ok),
        "errors_by_status": dict(Counter(str(line["status"]) for line in lines if line["status"] != 200)),
        "detections_by_label": dict(Counter(d["label"] for line in ok for d in line["detections"]).most_common()),
        "latency_ms": {
            "p50": float(np.percentile(latencies, 50)) if latencies else None,
            "p90": float(np.percentile(latencies, 90)) if latencies else None,
        },
    }


def format_summary(summary: dict) -> str:
    latency = summary["latency_ms"]
    timing = f"p50 {latency['p50']:.0f} ms, p90 {latency['p90']:.0f} ms" if latency["p50"] is not None else "-"
    return "\n".join(
        [
            f"images {summary['images']}: answered {summary['answered']}, errors {summary['errors']} "
            f"{summary['errors_by_status'] or ''}".rstrip(),
            f"detections by label: {summary['detections_by_label']}",
            f"handler latency: {timing}",
        ]
    )


def read_done(out: Path) -> set[str]:
    """Keys done for good in `out`: a cut-off last line and 5xx lines (worth retrying) are dropped, so redone."""
    if not out.is_file():
        return set()
    raw = out.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    lines = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
    kept = [line for line in lines if (line.get("status") or 0) < 500]  # 5xx: S3 unavailable, the function failed
    if len(complete) != len(raw) or len(kept) != len(lines):
        (tmp := out.with_name(out.name + ".tmp")).write_text("".join(json.dumps(line) + "\n" for line in kept))
        tmp.replace(out)  # one rename: an interruption loses no line
    return {line["key"] for line in kept}


# ---- local: the handler in-process ----------------------------------------------------------


def list_source(source: str) -> tuple[list[str], str | None, Path | None]:
    """(keys, bucket, folder): the images under a folder (relative paths) or an S3 prefix (keys)."""
    if source.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        try:
            bucket, prefix = parse_s3_prefix(source)
        except ValueError as err:
            raise BatchInputError(str(err)) from None
        keys = []
        try:
            # boto3 honours AWS_ENDPOINT_URL_S3 itself, as the handler's S3 client does.
            for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys += [o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        except ClientError as err:
            raise BatchInputError(f"cannot list {source}: {err.response['Error'].get('Code', err)}") from None
        if not keys:
            raise BatchInputError(f"no objects under {source}")
        return sorted(keys), bucket, None
    folder = Path(source)
    if not folder.is_dir():
        raise BatchInputError(f"not a folder or s3:// location: {source}")
    keys = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in SERVED_IMAGE_SUFFIXES and p.is_file()
    )
    if not keys:
        raise BatchInputError(f"no images ({', '.join(sorted(SERVED_IMAGE_SUFFIXES))}) under {source}")
    return keys, None, folder


_WORKER: dict = {}


def _init_worker(model: str, bucket: str | None, folder: str | None, cpu_sets: list, counter) -> None:
    """Each worker: its own share of the CPUs (ONNX Runtime sizes its threads from the affinity), its
    own handler state, the model loaded once."""
    from helpers.runtime import handler

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.sched_setaffinity(0, cpu_sets[index % len(cpu_sets)])
    handler.init({"MODEL_PATH": model, "LOG_LEVEL": "ERROR", "METRICS_NAMESPACE": ""})
    _WORKER.update(handler=handler.handler, bucket=bucket, folder=Path(folder) if folder else None)


def _detect(key: str) -> dict:
    """The same event the state machine sends for S3 keys; base64 for files in a folder."""
    if _WORKER["bucket"] is not None:
        event = {"s3": {"bucket": _WORKER["bucket"], "key": key}}
    else:
        event = {"image": base64.b64encode((_WORKER["folder"] / key).read_bytes()).decode()}
    return result_line(key, _WORKER["handler"](event, None))


def run_local(source: str, model: Path, out: Path, workers: int | None = None, progress: bool = True) -> dict:
    """Detect every image under `source` not yet in `out`, appending one line each; returns the summary
    of the whole output file and how many images this call did."""
    import multiprocessing

    from tqdm import tqdm

    from helpers.runtime.model import Detector

    keys, bucket, folder = list_source(source)
    if not Path(model).is_file():
        raise BatchInputError(not_found("model", model))
    try:
        Detector(model)
    except Exception as err:  # any reason the handler could not load it, said in one line
        raise BatchInputError(f"cannot load model {model}: {str(err).splitlines()[0]}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    done = read_done(out)
    todo = [key for key in keys if key not in done]
    cpus = sorted(os.sched_getaffinity(0))
    workers = max(1, min(workers or len(cpus), len(todo) or 1))
    cpu_sets = [set(cpus[i :: min(workers, len(cpus))]) for i in range(min(workers, len(cpus)))]
    started = time.perf_counter()
    # spawn, not fork: a forked child inherits the parent's thread pools (ONNX Runtime, PyTorch) in
    # whatever state they were and can hang on them.
    context = multiprocessing.get_context("spawn")
    init_args = (str(model), bucket, str(folder) if folder else None, cpu_sets, context.Value("i", 0))
    with open(out, "a") as sink, context.Pool(workers, _init_worker, init_args) as pool:
        bar = tqdm(total=len(todo), desc="images", unit="img", disable=not progress)
        for line in pool.imap_unordered(_detect, todo):
            sink.write(json.dumps(line) + "\n")
            sink.flush()  # an interrupted run keeps every finished line
            bar.update()
        bar.close()
    elapsed = time.perf_counter() - started
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {
        **summarize(lines),
        "skipped_already_done": len(keys) - len(todo),
        "this_run": {"images": len(todo), "seconds": elapsed, "workers": workers},
    }


# ---- AWS: the batch stack ---------------------------------------------------------------------


class _Clients:
    """The batch stack's AWS clients (endpoint_url: e.g. a local moto server)."""

    def __init__(self, region: str | None, endpoint_url: str | None):
        import boto3

        self.deployer = Deployer(region, endpoint_url)
        self.s3 = self.deployer.s3
        self.stepfunctions = boto3.client("stepfunctions", region_name=self.deployer.region, endpoint_url=endpoint_url)


def batch_stack(clients: _Clients, stack_name: str) -> dict:
    """The batch stack's state machine and its input/results locations (from its parameters). The ARN
    is the state machine's physical id, which every backend reports (moto 5.2 returns no outputs)."""
    parameters = clients.deployer.stack_parameters(stack_name)
    if parameters is None:
        raise BatchInputError(f"no batch stack {stack_name!r} (python -m helpers batch deploy ...)")
    resources = clients.deployer.cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    arn = next((r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "StateMachine"), None)
    if arn is None:
        raise BatchInputError(f"stack {stack_name!r} has no StateMachine resource: not a batch stack")
    return {**parameters, "StateMachineArn": arn}


def run_on_aws(
    clients: _Clients, stack_name: str, bucket: str, prefix: str, out: Path, progress: bool = True, log=print
) -> dict:
    """Start the batch state machine over s3://bucket/prefix, show progress, wait, collect the results."""
    from botocore.exceptions import ClientError
    from tqdm import tqdm

    stack = batch_stack(clients, stack_name)
    if bucket != stack["InputBucket"] or not prefix.startswith(stack.get("InputPrefix", "")):
        raise BatchInputError(
            f"s3://{bucket}/{prefix} is outside the stack's input s3://{stack['InputBucket']}/{stack.get('InputPrefix', '')}"
        )
    try:
        listed = clients.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except ClientError as err:
        raise BatchInputError(f"cannot list s3://{bucket}/{prefix}: {err.response['Error'].get('Code', err)}") from None
    if not listed.get("KeyCount"):
        raise BatchInputError(f"no objects under s3://{bucket}/{prefix}")
    execution = clients.stepfunctions.start_execution(
        stateMachineArn=stack["StateMachineArn"], input=json.dumps({"prefix": prefix})
    )["executionArn"]
    log(f"started {execution}")
    bar = tqdm(desc="images", unit="img", disable=not progress)
    counts: dict = {}
    while True:
        description = clients.stepfunctions.describe_execution(executionArn=execution)
        runs = clients.stepfunctions.list_map_runs(executionArn=execution).get("mapRuns", [])
        if runs:
            counts = clients.stepfunctions.describe_map_run(mapRunArn=runs[0]["mapRunArn"])["itemCounts"]
            bar.total = counts["total"]
            bar.n = counts["succeeded"] + counts["failed"] + counts["timedOut"] + counts["aborted"]
            bar.set_postfix(failed=counts["failed"] + counts["timedOut"])
            bar.refresh()
        if description["status"] != "RUNNING":
            break
        time.sleep(POLL_SECONDS)
    bar.close()
    if description["status"] == "SUCCEEDED":
        writer = json.loads(description["output"])["ResultWriterDetails"]
        manifest_bucket, manifest_key = writer["Bucket"], writer["Key"]
    elif runs:  # a failed run still writes what it has: <ResultsPrefix>/<map run id>/manifest.json
        manifest_bucket = stack["ResultsBucket"]
        manifest_key = f"{stack['ResultsPrefix']}/{runs[0]['mapRunArn'].rsplit(':', 1)[1]}/manifest.json"
    else:  # e.g. the ItemReader could not list the prefix, or the execution was stopped or timed out first
        reason = ": ".join(filter(None, [description.get("error"), description.get("cause")]))
        raise BatchFailed(
            f"execution {execution} {description['status']} before its map run started"
            f"{f' ({reason})' if reason else ''}: no results to collect, nothing written to {out}"
        )
    lines = collect_result_writer(clients.s3, manifest_bucket, manifest_key)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {
        **summarize(lines),
        "execution_status": description["status"],
        "manifest": f"s3://{manifest_bucket}/{manifest_key}",
        "map_run_item_counts": counts,
    }


def deploy_batch_stack(clients: _Clients, stack_name: str, parameters: dict) -> dict:
    """Create or update the batch stack (cloudformation/batch.yaml) through a change set."""
    return clients.deployer.apply(stack_name, parameters, template=BATCH_TEMPLATE)


# ---- CLI ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers batch", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run the handler in-process over a folder or s3://bucket/prefix")
    local.add_argument("source", help="a folder, or s3://bucket/prefix")
    local.add_argument(
        "--model", type=Path, default=None, help="ONNX model (default: the shipped one, helpers.export.ship)"
    )
    local.add_argument("--out", "--results", dest="out", type=Path, default=Path("results.jsonl"))
    local.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")

    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument("--stack", default="fridge-detector-batch", help="the batch stack's name")
    aws.add_argument("--region", default=None)
    aws.add_argument("--endpoint-url", default=None, help=argparse.SUPPRESS)  # a local moto server, for tests

    deploy = commands.add_parser("deploy", parents=[aws], help="create or update the batch stack")
    deploy.add_argument("--input-bucket", required=True)
    deploy.add_argument("--input-prefix", default="")
    deploy.add_argument("--results-bucket", required=True)
    deploy.add_argument("--results-prefix", default="batch-results")
    deploy.add_argument("--detector", default="fridge-detector", help="the detector stack's ServiceName")
    deploy.add_argument("--max-concurrency", type=int, default=40)
    deploy.add_argument("--tolerated-failure-percentage", type=float, default=5.0)
    deploy.add_argument("--child-execution-type", choices=("EXPRESS", "STANDARD"), default="EXPRESS")

    run = commands.add_parser("run", parents=[aws], help="detect every image under s3://bucket/prefix on AWS")
    run.add_argument("--bucket", required=True)
    run.add_argument("--prefix", default="")
    run.add_argument("--out", "--results", dest="out", type=Path, default=Path("results.jsonl"))
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "local":
            summary = run_local(args.source, args.model or run_artifacts().shipped, args.out, args.workers)
            this_run = summary["this_run"]
            print(
                f"{this_run['images']} images in {this_run['seconds']:.1f} s with {this_run['workers']} worker(s) "
                f"({summary['skipped_already_done']} already in {args.out})"
            )
        elif args.command == "deploy":
            outputs = deploy_batch_stack(
                _Clients(args.region, args.endpoint_url),
                args.stack,
                {
                    "DetectorName": args.detector,
                    "InputBucket": args.input_bucket,
                    "InputPrefix": args.input_prefix,
                    "ResultsBucket": args.results_bucket,
                    "ResultsPrefix": args.results_prefix,
                    "MaxConcurrency": str(args.max_concurrency),
                    # Always with a decimal point: a valid ASL number, and the form moto's parser accepts.
                    "ToleratedFailurePercentage": f"{args.tolerated_failure_percentage:.1f}",
                    "ChildExecutionType": args.child_execution_type,
                },
            )
            print(json.dumps(outputs, indent=2))
            return 0
        else:
            summary = run_on_aws(
                _Clients(args.region, args.endpoint_url), args.stack, args.bucket, args.prefix, args.out
            )
            print(f"execution {summary['execution_status']}; results from {summary['manifest']}")
            counted = summary["map_run_item_counts"].get("total")
            if counted is not None and counted != summary["images"]:
                print(f"note: the map run counted {counted} items; its result files hold {summary['images']}")
    except (BatchInputError, DeployError, BatchFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, BatchFailed) else 2
    print(format_summary(summary))
    Path(f"{args.out}.summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if summary.get("execution_status", "SUCCEEDED") == "SUCCEEDED" else 1


if __name__ == "__main__":
    raise SystemExit(main())
