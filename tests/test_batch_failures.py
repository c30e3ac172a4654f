"""Batch failure paths on the tiny detector (no trained model): resume retries what failed for a
reason worth retrying, keeps what is final, and every line stays one per key."""

import json
import shutil

import pytest

from helpers.aws import batch
from helpers.paths import SAMPLE_DIR

SAMPLE_IMAGES = sorted((SAMPLE_DIR / "images").glob("*.jpg"))


def _line(key: str, status: int) -> dict:
    if status == 200:
        return {"key": key, "status": 200, "detections": [], "image": {"width": 1, "height": 1}, "latency_ms": 1.0}
    return {"key": key, "status": status, "error": f"recorded {status}"}


def _write(path, lines) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


@pytest.mark.parametrize(
    ("status", "redone"),
    [
        (200, False),  # answered
        (400, False),  # the image itself is bad: the same answer again
        (403, False),
        (404, False),
        (413, False),
        (500, True),  # the function failed: worth another try
        (503, True),  # S3 unavailable: the retryable failure
    ],
)
def test_resume_redoes_a_key_only_when_its_recorded_result_is_retryable(tmp_path, status, redone):
    out = tmp_path / "results.jsonl"
    _write(out, [_line("a.jpg", 200), _line("b.jpg", status)])
    done = batch.read_done(out)
    assert done == ({"a.jpg"} if redone else {"a.jpg", "b.jpg"})
    # The file keeps exactly the lines of the done keys, so the redone key gets one line, not two.
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == sorted(done)


def test_a_resumed_run_retries_5xx_keys_and_ends_with_one_line_per_image(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = [p.name for p in SAMPLE_IMAGES[:5]]
    for path in SAMPLE_IMAGES[:5]:
        shutil.copy(path, folder / path.name)
    out = tmp_path / "results.jsonl"
    # names[4] was never reached; names[3] was answered (a made-up line, kept as it is).
    recorded = [_line(names[0], 503), _line(names[1], 500), _line(names[2], 400), _line(names[3], 200)]
    _write(out, recorded)

    summary = batch.run_local(str(folder), tiny_model, out, workers=1, progress=False)

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    by_key = {line["key"]: line for line in lines}
    assert len(lines) == len(by_key) == 5
    assert summary["this_run"]["images"] == 3 and summary["skipped_already_done"] == 2
    for name in (names[0], names[1], names[4]):  # retried or new: answered by the tiny detector
        assert by_key[name]["status"] == 200 and by_key[name]["detections"][0]["label"] == "carton"
        assert by_key[name]["image"] == {"width": 499, "height": 666}
    assert by_key[names[2]] == recorded[2] and by_key[names[3]] == recorded[3]
    assert summary["images"] == 5 and summary["errors_by_status"] == {"400": 1}


# ---- S3 and the batch stack on moto -------------------------------------------------------------

REGION = "eu-central-1"


@pytest.fixture
def moto_s3(monkeypatch):
    import boto3

    from helpers.local.moto_aws import moto_server

    with moto_server(REGION) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)  # the handler's own S3 client, as in Lambda
        s3 = boto3.client("s3", endpoint_url=url, region_name=REGION)
        s3.create_bucket(Bucket="photos", CreateBucketConfiguration={"LocationConstraint": REGION})
        yield url, s3


def test_non_image_keys_under_the_prefix_are_error_lines_and_the_run_goes_on(moto_s3, tiny_model, tmp_path):
    """An S3 prefix is taken whole, as the state machine's ItemReader lists it: what does not decode is a
    400 line, like on AWS, and every image is still answered."""
    _, s3 = moto_s3
    s3.put_object(Bucket="photos", Key="shelf/10.jpg", Body=SAMPLE_IMAGES[0].read_bytes())
    s3.put_object(Bucket="photos", Key="shelf/notes.txt", Body=b"bought on Monday")
    s3.put_object(Bucket="photos", Key="shelf/labels.json", Body=b"{}")
    out = tmp_path / "s3.jsonl"
    summary = batch.run_local("s3://photos/shelf/", tiny_model, out, workers=1, progress=False)
    lines = {line["key"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert set(lines) == {"shelf/10.jpg", "shelf/notes.txt", "shelf/labels.json"}
    assert lines["shelf/10.jpg"]["status"] == 200
    for key in ("shelf/notes.txt", "shelf/labels.json"):
        assert lines[key]["status"] == 400 and lines[key]["error"] == "not a recognised image format", lines[key]
    assert summary["errors_by_status"] == {"400": 2} and summary["answered"] == 1


def test_a_missing_bucket_is_one_line_and_exit_2(moto_s3, tiny_model, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert batch.main(["local", "s3://no-such-bucket/shelf/", "--model", str(tiny_model), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: cannot list s3://no-such-bucket/shelf/: NoSuchBucket"
    assert not out.exists()


def _put_json(s3, key, value) -> None:
    s3.put_object(Bucket="photos", Key=key, Body=json.dumps(value))


def _child(key: str, output: dict | None = None, status: str = "SUCCEEDED", **error) -> dict:
    """One child execution as ResultWriter writes it (Input and Output are JSON strings)."""
    entry = {"Input": json.dumps({"Key": key, "Size": 1}), "Status": status, **error}
    if output is not None:
        entry["Output"] = json.dumps(output)
    return entry


DETECTION = {"label": "carton", "score": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}


def _result_files(s3, prefix: str) -> str:
    """Results split over two SUCCEEDED files, one FAILED and one PENDING (a run stopped early)."""
    files = {
        "SUCCEEDED_0.json": [_child("shelf/a.jpg", {"detections": [DETECTION], "image": {"width": 4, "height": 4}, "timings_ms": {"total": 12.5}})],
        "SUCCEEDED_1.json": [_child("shelf/b.jpg", {"statusCode": 400, "error": "cannot decode image"})],
        "FAILED_0.json": [_child("shelf/c.jpg", status="FAILED", Error="S3Unavailable", Cause="S3 cannot be reached")],
        "PENDING_0.json": [_child("shelf/d.jpg", status="PENDING")],
    }  # fmt: skip
    for name, entries in files.items():
        _put_json(s3, f"{prefix}/{name}", entries)
    result_files = {}
    for name in files:
        result_files.setdefault(name.split("_")[0], []).append({"Key": f"{prefix}/{name}", "Size": 1})
    _put_json(s3, f"{prefix}/manifest.json", {"DestinationBucket": "photos", "ResultFiles": result_files})
    return f"{prefix}/manifest.json"


#: The lines for _result_files, written out by hand.
EXPECTED_LINES = [
    {"key": "shelf/a.jpg", "status": 200, "detections": [DETECTION], "image": {"width": 4, "height": 4}, "latency_ms": 12.5},
    {"key": "shelf/b.jpg", "status": 400, "error": "cannot decode image"},
    {"key": "shelf/c.jpg", "status": None, "error": "FAILED: S3Unavailable: S3 cannot be reached"},
    {"key": "shelf/d.jpg", "status": None, "error": "PENDING: PENDING"},
]  # fmt: skip


def test_split_failed_and_pending_result_files_are_all_collected(moto_s3):
    _, s3 = moto_s3
    manifest = _result_files(s3, "batch-results/run-1")
    lines = batch.collect_result_writer(s3, "photos", manifest)
    assert sorted(lines, key=lambda line: line["key"]) == EXPECTED_LINES


class _FailedExecution:
    """Step Functions answering for a Distributed Map run that failed (too many items failed)."""

    def __init__(self, map_run: str):
        self.map_run, self.started = map_run, []

    def start_execution(self, stateMachineArn, input):
        self.started.append(json.loads(input))
        return {"executionArn": "arn:aws:states:eu-central-1:123456789012:execution:fridge-detector-batch:e-1"}

    def describe_execution(self, executionArn):
        return {"status": "FAILED", "error": "States.ExceedToleratedFailureThreshold", "cause": "too many failed"}

    def list_map_runs(self, executionArn):
        return {"mapRuns": [{"mapRunArn": f"arn:aws:states:eu-central-1:123456789012:mapRun:m/e-1:{self.map_run}"}]}

    def describe_map_run(self, mapRunArn):
        return {"itemCounts": {"total": 4, "succeeded": 2, "failed": 1, "timedOut": 0, "aborted": 0, "pending": 1}}


def _deployed_batch_stack(moto_s3, made_up_zip, tiny_model) -> tuple:
    """The detector's stack and the batch stack over s3://photos/shelf/ on the moto server: (s3, the
    endpoint and region arguments every batch command takes)."""
    from helpers.local.moto_aws import MotoDeployer

    url, s3 = moto_s3
    MotoDeployer(REGION, url, log=lambda *_: None).up(
        "fridge-detector", "artifacts", made_up_zip, tiny_model, "x86_64", "fridge-detector"
    )
    aws = ["--endpoint-url", url, "--region", REGION]
    deploy = ["deploy", *aws, "--input-bucket", "photos", "--input-prefix", "shelf/", "--results-bucket", "photos"]
    assert batch.main([*deploy, "--child-execution-type", "STANDARD"]) == 0
    return s3, aws


def test_a_failed_execution_collects_what_its_map_run_wrote_and_exits_1(
    moto_s3, made_up_zip, tiny_model, tmp_path, monkeypatch, capsys
):
    s3, aws = _deployed_batch_stack(moto_s3, made_up_zip, tiny_model)
    s3.put_object(Bucket="photos", Key="shelf/a.jpg", Body=b"x")
    _result_files(s3, "batch-results/run-9")  # where a failed run's manifest is: <ResultsPrefix>/<map run id>/
    fake = _FailedExecution("run-9")
    real_init = batch._Clients.__init__

    def clients(self, region, endpoint_url):
        real_init(self, region, endpoint_url)
        self.stepfunctions = fake

    monkeypatch.setattr(batch._Clients, "__init__", clients)
    monkeypatch.setattr(batch, "POLL_SECONDS", 0)
    out = tmp_path / "aws.jsonl"
    capsys.readouterr()
    assert batch.main(["run", *aws, "--bucket", "photos", "--prefix", "shelf/", "--out", str(out)]) == 1
    assert fake.started == [{"prefix": "shelf/"}]
    assert sorted(map(json.loads, out.read_text().splitlines()), key=lambda line: line["key"]) == EXPECTED_LINES
    stdout = capsys.readouterr().out
    assert "execution FAILED; results from s3://photos/batch-results/run-9/manifest.json" in stdout
    summary = json.loads((tmp_path / "aws.jsonl.summary.json").read_text())
    assert summary["execution_status"] == "FAILED" and summary["errors_by_status"] == {"400": 1, "None": 2}


def test_an_execution_that_fails_before_its_map_run_is_one_line_exit_1_and_leaves_the_results_alone(
    moto_s3, made_up_zip, tiny_model, tmp_path, monkeypatch, capsys
):
    """No map run means no manifest to collect: `run` says so in one line, names the execution, and
    leaves an earlier results file as it was."""
    s3, aws = _deployed_batch_stack(moto_s3, made_up_zip, tiny_model)
    s3.put_object(Bucket="photos", Key="shelf/a.jpg", Body=SAMPLE_IMAGES[0].read_bytes())
    # moto's documented switch: every execution it starts is FAILED at once, with no map run.
    monkeypatch.setenv("SF_EXECUTION_HISTORY_TYPE", "FAILURE")
    monkeypatch.setattr(batch, "POLL_SECONDS", 0)
    out = tmp_path / "aws.jsonl"
    _write(out, [_line("shelf/a.jpg", 200)])
    earlier = out.read_text()
    capsys.readouterr()

    assert batch.main(["run", *aws, "--bucket", "photos", "--prefix", "shelf/", "--out", str(out)]) == 1

    captured = capsys.readouterr()
    [started] = captured.out.splitlines()
    execution = started.removeprefix("started ")
    assert execution.startswith(f"arn:aws:states:{REGION}:123456789012:execution:")
    # stderr: the progress bar (it never moved), then the error as its last line; no traceback.
    message = f"error: execution {execution} FAILED before its map run started: no results to collect, nothing written to {out}"
    *bar, last = [line for line in captured.err.splitlines() if line.strip()]
    assert last == message and all(line.startswith("images: 0img") for line in bar), captured.err
    assert out.read_text() == earlier and not (tmp_path / "aws.jsonl.summary.json").exists()
