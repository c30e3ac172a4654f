"""The model download at init when S3 misbehaves: a local HTTP server speaking just enough S3 (HEAD and GET
of one object) cuts the stream, serves other bytes, stalls or refuses. Each fault is one named init error,
the model cache is left empty, and the next cold start, with S3 healthy again, succeeds."""

import hashlib
import os
import subprocess
import sys

import pytest
from s3_faults import CREDENTIALS, KEY

from helpers.paths import PROJECT_ROOT
from helpers.runtime import errors
from helpers.runtime import handler as h
from helpers.runtime.checksum import sha256_file


def _env(tmp_path, sha256):
    return {
        "MODEL_S3_URI": f"s3:/{KEY}",
        "MODEL_SHA256": sha256,
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "LOG_LEVEL": "WARNING",
    }


WHERE = f"s3:/{KEY}"


@pytest.mark.parametrize(
    ("fault", "error", "message", "gets"),
    [
        # A stream that breaks off or stalls is tried twice (storage._transfer_config), not s3transfer's 5 times.
        ("truncate", errors.ModelDownloadTruncated, f"{WHERE}: the stream broke off (IncompleteReadError)", 2),
        ("corrupt", errors.ModelChecksumMismatch, f"MODEL_SHA256 mismatch: {WHERE} has {{corrupted}}", 1),
        ("stall", errors.ModelDownloadTimeout, f"{WHERE}: S3 stopped sending (ReadTimeoutError)", 2),
        ("deny", errors.ModelAccessDenied, f"access denied to {WHERE}", 0),
        ("grown", errors.ModelDownloadTruncated, f"{WHERE}: {{size}} of {{announced}} bytes arrived", 1),
    ],
)
def test_each_download_fault_is_a_named_init_error_leaving_nothing_and_the_next_init_succeeds(
    faulty_s3, tiny_model, tmp_path, fault, error, message, gets
):
    server, _ = faulty_s3
    env = _env(tmp_path, sha256_file(tiny_model))
    server.fault = fault
    with pytest.raises(error) as info:
        h.init(env)
    size, corrupted = tiny_model.stat().st_size, hashlib.sha256(bytes(255 - b for b in tiny_model.read_bytes()))
    assert str(info.value) == message.format(size=size, announced=size + 1, corrupted=corrupted.hexdigest())
    assert server.gets == gets
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
