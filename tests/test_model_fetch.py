"""The model download at init when S3 misbehaves: a local HTTP server speaking just enough S3 (HEAD and GET
of one object) cuts the stream, serves other bytes, stalls or refuses. Each fault is one named init error,
the model cache is left empty, and the next cold start, with S3 healthy again, succeeds."""

import http.server
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config

from helpers.paths import PROJECT_ROOT
from helpers.runtime import errors, storage
from helpers.runtime import handler as h
from helpers.runtime.checksum import sha256_file

KEY = "/models/fridge/model.onnx"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "eu-central-1"}


class FaultyS3(http.server.ThreadingHTTPServer):
    """One object at KEY; `fault` decides how GET answers: None (healthy), "truncate" (half the bytes
    under the full Content-Length, then the connection closes), "corrupt" (as many other bytes), "stall"
    (the headers, then nothing for 3 s), "deny" (403 AccessDenied to HEAD and GET)."""

    daemon_threads = True

    def __init__(self, body: bytes):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body, self.fault, self.gets = body, None, 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self._answer(send_body=False)

    def do_GET(self):
        self.server.gets += 1
        self._answer(send_body=True)

    def _answer(self, send_body: bool):
        server = self.server
        if self.path.split("?")[0] != KEY:
            self.send_error(404)
            return
        if server.fault == "deny":
            error = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(error) if send_body else 0))
            self.end_headers()
            if send_body:
                self.wfile.write(error)
            return
        body = bytes(255 - b for b in server.body) if server.fault == "corrupt" else server.body
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"0123456789abcdef0123456789abcdef"')
        self.send_header("Content-Type", "binary/octet-stream")
        self.end_headers()
        if not send_body:
            return
        if server.fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif server.fault == "stall":
            self.wfile.write(body[:1024])
            self.wfile.flush()
            time.sleep(3)
        else:
            self.wfile.write(body)


@pytest.fixture
def faulty_s3(tiny_model, monkeypatch):
    server = FaultyS3(tiny_model.read_bytes())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    # The handler's own client settings, with a 1 s read timeout so that a stall costs seconds.
    config = Config(**{**storage.CLIENT_CONFIG, "read_timeout": 1})
    client = boto3.client("s3", endpoint_url=url, config=config)
    monkeypatch.setattr(storage, "client", lambda: client)
    yield server, url
    server.shutdown()


def _env(tmp_path, sha256):
    return {
        "MODEL_S3_URI": f"s3:/{KEY}",
        "MODEL_SHA256": sha256,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "LOG_LEVEL": "WARNING",
    }


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("truncate", errors.ModelDownloadTruncated, "broke off"),
        ("corrupt", errors.ModelChecksumMismatch, "MODEL_SHA256 mismatch"),
        ("stall", errors.ModelDownloadTimeout, "stopped sending"),
        ("deny", errors.ModelAccessDenied, "access denied to s3://models/fridge/model.onnx"),
    ],
)
def test_each_download_fault_is_a_named_init_error_leaving_nothing_and_the_next_init_succeeds(
    faulty_s3, tiny_model, tmp_path, fault, error, message
):
    server, _ = faulty_s3
    env = _env(tmp_path, sha256_file(tiny_model))
    server.fault = fault
    with pytest.raises(error, match=message):
        h.init(env)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial file, no s3transfer temp file
    server.fault = None
    state = h.init(env)
    assert state.detector.path == tmp_path / "cache" / "model.onnx"
    assert sha256_file(state.detector.path) == sha256_file(tiny_model)
    assert list((tmp_path / "cache").iterdir()) == [state.detector.path]


def test_a_failed_init_inside_a_request_is_a_500_json_and_the_next_request_initialises(
    faulty_s3, tiny_model, tmp_path, monkeypatch, lambda_context, sample_jpegs
):
    import base64

    server, _ = faulty_s3
    for name, value in _env(tmp_path, sha256_file(tiny_model)).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    monkeypatch.setattr(h, "_STATE", None)
    event = {"image": base64.b64encode(sample_jpegs["10.jpg"]).decode()}
    server.fault = "truncate"
    failed = h.handler(event, lambda_context)
    assert failed["statusCode"] == 500 and failed["error"] == "internal error"
    server.fault = None
    assert "detections" in h.handler(event, lambda_context)


def test_a_full_disk_is_a_named_error_and_leaves_nothing(faulty_s3, tiny_model, tmp_path):
    """A real write failure: the download runs in a process whose file-size limit is half the model
    (RLIMIT_FSIZE; writes beyond it fail with EFBIG, as a full /tmp fails them with ENOSPC)."""
    _, url = faulty_s3
    cache = tmp_path / "cache"
    script = f"""
import resource, signal, sys
from pathlib import Path
from helpers.runtime import storage, errors
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({tiny_model.stat().st_size // 2}, resource.RLIM_INFINITY))
try:
    storage.download_model("models", "fridge/model.onnx", Path({str(cache / "model.onnx")!r}), None)
except errors.ModelCacheFull as err:
    print(type(err).__name__, err)
"""
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL_S3": url}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ModelCacheFull no room for s3://models/fridge/model.onnx"), out.stdout
    assert list(cache.iterdir()) == []
