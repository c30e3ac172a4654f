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
