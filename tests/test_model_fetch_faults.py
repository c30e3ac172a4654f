"""More of the model download at init over real HTTP (tests/s3_faults.py): a missing object, an S3 error
outside the named ones, a connect timeout, transient 503s that the client's retries absorb, the
free-space check, and a cached file with the wrong checksum replaced."""

import hashlib
import logging
import shutil
import socket

import boto3
import pytest
from botocore.config import Config
from s3_faults import KEY, unanswered_endpoint

from helpers.runtime import errors, storage
from helpers.runtime import handler as h
from helpers.runtime.checksum import sha256_file

WHERE = f"s3:/{KEY}"


def _env(tmp_path, tiny_model, uri=WHERE):
    return {
        "MODEL_S3_URI": uri,
        "MODEL_SHA256": sha256_file(tiny_model),
        "MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "LOG_LEVEL": "CRITICAL",
    }


@pytest.mark.parametrize(
    ("uri", "fault", "error", "message"),
    [
        ("s3://models/fridge/other.onnx", None, errors.ModelNotFound, "s3://models/fridge/other.onnx not found"),
        (WHERE, (404, "NoSuchBucket"), errors.ModelNotFound, f"{WHERE} not found"),
        (WHERE, (400, "InvalidObjectState"), errors.ModelDownloadFailed, f"{WHERE}: 400"),
        (WHERE, (503, "SlowDown"), errors.ModelDownloadFailed, f"{WHERE}: 503"),  # retries exhausted
        (WHERE, "huge", errors.ModelCacheFull, f"{WHERE} is 1000000000000000 bytes; .* has less free space"),
    ],
)
def test_each_fault_is_one_named_init_error_and_nothing_is_left(
    faulty_s3, tiny_model, tmp_path, uri, fault, error, message
):
    server, _ = faulty_s3
    server.fault = fault
    with pytest.raises(error, match=message):
        h.init(_env(tmp_path, tiny_model, uri))
    assert list((tmp_path / "cache").iterdir()) == []
    assert server.gets == 0  # every one of them is decided by the HEAD, before any byte is fetched


@pytest.mark.parametrize("fail_first", [1, 3])
def test_transient_503s_are_retried_by_the_client_and_the_init_succeeds(faulty_s3, tiny_model, tmp_path, fail_first):
    server, _ = faulty_s3
    server.fail_first = fail_first
    state = h.init(_env(tmp_path, tiny_model))
    assert sha256_file(state.detector.path) == sha256_file(tiny_model)
    # The failed HEADs, then the good one of the size check and s3transfer's own, then one GET.
    assert (server.requests["HEAD"], server.gets) == (fail_first + 2, 1)


def test_a_connect_timeout_is_model_download_timeout(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = Config(**{**storage.CLIENT_CONFIG, "connect_timeout": 0.2, "retries": {"max_attempts": 1}})
    with unanswered_endpoint() as url:
        client = boto3.client("s3", endpoint_url=url, config=config, region_name="eu-central-1")
        monkeypatch.setattr(storage, "client", lambda: client)
        with pytest.raises(errors.ModelDownloadTimeout, match=r"no answer within the timeouts \(ConnectTimeoutError\)"):
            h.init(_env(tmp_path, tiny_model))
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_cached_file_with_the_wrong_checksum_is_replaced_by_the_download(faulty_s3, tiny_model, tmp_path):
    server, _ = faulty_s3
    cached = tmp_path / "cache" / "model.onnx"
    cached.parent.mkdir()
    cached.write_bytes(b"an older model")
    state = h.init(_env(tmp_path, tiny_model))
    assert state.detector.path == cached and cached.read_bytes() == tiny_model.read_bytes()
    assert server.gets == 1
    h.init(_env(tmp_path, tiny_model))  # now it matches: a warm /tmp, no second download
    assert server.gets == 1


def test_a_refused_connection_is_model_download_failed_naming_the_cause(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with socket.socket() as closed:  # a port nobody listens on: the connect is refused at once
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    config = Config(**{**storage.CLIENT_CONFIG, "retries": {"max_attempts": 1}})
    client = boto3.client("s3", endpoint_url=url, config=config, region_name="eu-central-1")
    monkeypatch.setattr(storage, "client", lambda: client)
    with pytest.raises(errors.ModelDownloadFailed) as info:
        h.init(_env(tmp_path, tiny_model))
    assert str(info.value) == (
        f'{WHERE}: EndpointConnectionError: Could not connect to the endpoint URL: "{url}/models/fridge/model.onnx"'
    )


def test_a_cache_folder_is_made_parents_and_all_and_a_model_path_taken_is_not_called_a_full_disk(
    faulty_s3, tiny_model, tmp_path
):
    env = {**_env(tmp_path, tiny_model), "MODEL_CACHE_DIR": str(tmp_path / "tmp" / "models" / "fridge")}
    assert h.init(env).detector.path == tmp_path / "tmp" / "models" / "fridge" / "model.onnx"
    (tmp_path / "blocked" / "model.onnx" / "old").mkdir(parents=True)  # a folder where the model goes
    with pytest.raises(IsADirectoryError):  # an OSError that is not a full disk stays itself
        h.init({**env, "MODEL_CACHE_DIR": str(tmp_path / "blocked")})
    assert [p.name for p in (tmp_path / "blocked").iterdir()] == ["model.onnx"]  # the partial file removed


def test_a_model_path_is_verified_against_model_sha256(tiny_model, tmp_path):
    logger = logging.getLogger("test.fetch")
    assert storage.fetch_model(tiny_model, None, sha256_file(tiny_model), tmp_path, logger) == tiny_model
    other = hashlib.sha256(b"another model").hexdigest()
    with pytest.raises(errors.ModelChecksumMismatch) as info:
        storage.fetch_model(tiny_model, None, other, tmp_path, logger)
    assert str(info.value) == f"MODEL_SHA256 mismatch: {tiny_model} has {sha256_file(tiny_model)}"


def test_a_download_is_logged_with_its_bucket_and_key(faulty_s3, tiny_model, tmp_path, caplog):
    logger = logging.getLogger("test.fetch")
    with caplog.at_level(logging.INFO, logger="test.fetch"):
        path = storage.fetch_model(None, ("models", "fridge/model.onnx"), None, tmp_path, logger)
    assert path == tmp_path / "model.onnx" and path.read_bytes() == tiny_model.read_bytes()
    [record] = caplog.records
    assert (record.getMessage(), record.fields) == (
        "model downloaded",
        {"bucket": "models", "key": "fridge/model.onnx"},
    )


def test_a_model_exactly_as_large_as_the_free_space_is_downloaded(faulty_s3, tiny_model, tmp_path, monkeypatch):
    """The free-space check's boundary: no real disk can be made to hold exactly that much free, so its
    reading is replaced by one of the model's size."""
    size = tiny_model.stat().st_size
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10 * size, 9 * size, size))
    storage.download_model("models", "fridge/model.onnx", tmp_path / "model.onnx", sha256_file(tiny_model))
    assert (tmp_path / "model.onnx").read_bytes() == tiny_model.read_bytes()


def test_an_s3_error_without_a_code_is_model_download_failed_quoting_botocore(faulty_s3, tiny_model, tmp_path):
    server, _ = faulty_s3
    server.fault = "codeless"
    with pytest.raises(errors.ModelDownloadFailed) as info:
        h.init(_env(tmp_path, tiny_model))
    assert str(info.value) == f"{WHERE}: An error occurred (Unknown) when calling the GetObject operation: refused"
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("name", ["model.onnx", "weights.part"])
def test_the_downloaded_model_stays_whatever_its_file_is_called(faulty_s3, tiny_model, tmp_path, name):
    """The partial download is the file's name plus .part: with with_suffix(".part") a model saved as
    weights.part was its own partial file, and the cleanup deleted the model it had just downloaded."""
    storage.download_model("models", "fridge/model.onnx", tmp_path / name, sha256_file(tiny_model))
    assert (tmp_path / name).read_bytes() == tiny_model.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
