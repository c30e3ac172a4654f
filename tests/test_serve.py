"""`python -m helpers serve`: the built zip's handler behind a local Function URL answers as the
deployed function does (curl-style requests, several at once), and its demo page, driven in a real
Chromium by Playwright, draws what the API answers and shows a bad image's 4xx message."""

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers.data.dataset import SAMPLE_DIR

JPEG = SAMPLE_DIR / "images" / "10.jpg"


@pytest.fixture(scope="module")
def server(lambda_zip, make_tiny_model, tmp_path_factory):
    """The server on a free port, two runtime clients, the tiny detector with served threshold 0.3."""
    model, log = make_tiny_model(0.3), tmp_path_factory.mktemp("serve") / "stderr.txt"
    command = [sys.executable, "-m", "helpers", "serve", "--zip", str(lambda_zip["zip"]), "--model", str(model)]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [*command, "--port", "0", "--workers", "2"], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, f"no address in {line!r}: {log.read_text()}"
    yield f"http://127.0.0.1:{match.group(1)}"
    process.terminate()
    process.wait(timeout=30)


def post(url: str, body: bytes, content_type: str = "image/jpeg") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_raw_bytes_and_json_requests_are_answered_as_the_function_answers(server):
    status, body = post(server + "/", JPEG.read_bytes())
    assert status == 200 and body["image"] == {"width": 499, "height": 666} and body["model"] == "tiny"
    assert body["detections"] and min(d["score"] for d in body["detections"]) >= 0.3  # the served threshold
    status, low = post(server + "/?threshold=0.01", JPEG.read_bytes())
    assert status == 200 and len(low["detections"]) > len(body["detections"])
    status, error = post(server + "/", b"not an image", "application/octet-stream")
    assert status == 400 and error["error"] == "not a recognised image format"
    status, error = post(server + "/", b'{"image": "%%%"}', "application/json")
    assert status == 400 and error["error"] == "image is not valid base64"


def test_several_requests_at_once_are_all_answered(server):
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(server + "/", JPEG.read_bytes()), range(6)))
    assert [status for status, _ in answers] == [200] * 6
    assert len({json.dumps(body["detections"]) for _, body in answers}) == 1  # same image, same answer


def _chromium():
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra has it)")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    return playwright, executable


def test_the_demo_page_draws_what_the_api_answers_and_shows_errors(server, tmp_path):
    playwright, executable = _chromium()
    with urllib.request.urlopen(server + "/config") as answer:
        threshold = json.loads(answer.read())["score_threshold"]
    _, expected = post(server + "/?threshold=0.01&max_detections=100", JPEG.read_bytes())
    shown = [(d["label"], d["score"]) for d in expected["detections"] if d["score"] >= threshold]
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=flags)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server + "/")
        page.wait_for_function("document.getElementById('threshold-value').textContent !== '0.50'")
        page.set_input_files("#file", str(JPEG))
        page.wait_for_selector("#detections li")
        items = page.eval_on_selector_all("#detections li", "els => els.map(e => [e.dataset.label, +e.dataset.score])")
        assert [tuple(item) for item in items] == shown
        assert page.eval_on_selector("#canvas", "c => [c.width, c.height]") == [499, 666]
        assert page.locator("#timings tr").count() == len(expected["timings_ms"])
        page.screenshot(path=str(tmp_path / "page.png"))

        not_an_image = tmp_path / "notes.jpg"
        not_an_image.write_bytes(b"these are not pixels")
        page.set_input_files("#file", str(not_an_image))
        page.wait_for_function("document.getElementById('error').textContent !== ''")
        assert page.text_content("#error") == "400: not a recognised image format"
        assert page.locator("#detections li").count() == 0
        browser.close()
