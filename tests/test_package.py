"""The Lambda zip: built for real, trimmed, deterministic, within quotas, and run under the runtime client."""

import base64
import zipfile
from pathlib import Path

import pytest

from helpers.build import interpreters, native, package
from helpers.local.invoke import invoke_zip
from helpers.runtime import handler as h

PY312 = interpreters.find_python("3.12")
needs_312 = pytest.mark.skipif(
    PY312 is None, reason="no CPython 3.12 (PATH or pyenv) to build bytecode and invoke the zip"
)


@pytest.fixture(scope="module")
def built(lambda_zip):
    return lambda_zip


@needs_312
def test_zip_is_within_quotas_and_holds_only_the_runtime(built):
    assert built["zipped_bytes"] < package.ZIP_LIMIT and built["unzipped_bytes"] < package.UNZIPPED_LIMIT
    assert built["untrimmed_unzipped_bytes"] > 1.5 * built["unzipped_bytes"]
    names = zipfile.ZipFile(built["zip"]).namelist()
    helpers_files = {n for n in names if n.startswith("helpers/") and n.endswith(".py")}
    # The Lambda boundary is one folder: exactly helpers/runtime/ (every module in it) + the package marker.
    runtime_dir = Path(package.PROJECT_ROOT) / "helpers" / "runtime"
    expected = {f"helpers/runtime/{p.name}" for p in runtime_dir.glob("*.py")} | {"helpers/__init__.py"}
    assert "helpers/runtime/config.py" in expected and helpers_files == expected
    assert not [n for n in names if n.startswith(("boto3/", "botocore/", "torch/", "cv2/", "google/"))]
    assert not [n for n in names if "libonnxruntime.so" in n or "/tests/" in n]
    assert any(n.endswith(".cpython-312.pyc") for n in names)
    # The letterbox kernel, built for x86_64 (the compiler is in the report); not its source.
    assert "helpers/runtime/_letterbox_kernel.so" in names and not [n for n in names if n.endswith(".c")]
    assert built["letterbox_kernel"].startswith(("gcc", "cc", "x86_64-linux-gnu-gcc"))


@needs_312
def test_every_trim_rule_removes_something_and_the_removals_account_for_the_saving(built):
    """A rule that matches nothing is dead (or a pin moved what it meant to remove); what the rules
    removed is what pip's tree lost, apart from the runtime files and bytecode the build adds."""
    removed = built["trimmed_by_rule"]
    rules = [reason for reason, _ in package.TRIM_RULES]
    in_code = [package.METADATA, package.UNUSED_LIBRARIES, package.SYMBOLS]
    assert list(removed) == rules + in_code
    assert all(removed_bytes > 0 for removed_bytes in removed.values()), removed
    names = zipfile.ZipFile(built["zip"]).infolist()
    added = sum(i.file_size for i in names if i.filename.startswith("helpers/") or i.filename.endswith(".pyc"))
    assert built["untrimmed_unzipped_bytes"] - sum(removed.values()) + added == built["unzipped_bytes"]


@needs_312
def test_build_is_deterministic(built, tmp_path):
    again = package.build("x86_64", "3.12", out_dir=tmp_path)
    assert again["sha256"] == built["sha256"]


@needs_312
def test_zip_under_the_runtime_client_equals_in_process_handler(built, tiny_model, sample_jpegs):
    events = [{"image": base64.b64encode(data).decode(), "threshold": 0.01} for data in sample_jpegs.values()]
    events.append({"image": "%%%"})
    report = invoke_zip(built["zip"], events, {"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING"})
    assert report["python"].startswith("3.12") and report["runtime_client"].endswith("-4.2.2")
    assert report["init_error"] is None and report["failed"] == []
    # numpy, Pillow and onnxruntime were loaded from the unzipped package; nothing from this environment.
    loaded = " ".join(report["libraries_from_package"])
    assert all(f"{name}/" in loaded for name in ("numpy", "PIL", "onnxruntime"))
    assert "helpers/runtime/_letterbox_kernel.so" in loaded  # preprocessing ran in the zip's kernel
    assert report["libraries_from_dev_environment"] == []
    assert not [p for p in report["libraries"] if "torch" in p or "cv2" in p]
    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING"})
    for event, remote in zip(events[:-1], report["responses"]):
        local = h.handler(event, None)
        assert remote["detections"] == local["detections"]
        assert remote["image"] == {"width": 499, "height": 666}
    assert report["responses"][-1]["statusCode"] == 400
    assert len(report["latencies_ms"]) == len(events)
    assert 0 < report["handler_init_ms"] < report["cold_init_ms"]


@needs_312
def test_the_zip_serving_the_shipped_model_finds_the_test_boxes(built, trained):
    """The zip under the runtime client, serving the model that ships, on the run's test images only
    (which chose nothing): recall and precision at the served threshold above the bounds."""
    from helpers.evaluate.metrics import found_boxes
    from helpers.measure.targets import QUICK_SAMPLE_MINIMUM
    from helpers.pipeline import steps
    from helpers.runtime.classmap import ClassMap
    from helpers.runtime.config import FRIDGE_CLASSES
    from helpers.runtime.detections import Detections

    test = steps.split().evaluation()
    assert {r.image_path.name for r in test} == set(trained.test["found_per_image"])
    events = [{"image": base64.b64encode(r.image_path.read_bytes()).decode()} for r in test]
    report = invoke_zip(built["zip"], events, {"MODEL_PATH": str(steps.ensure_shipped()), "LOG_LEVEL": "WARNING"})
    served = trained.served_threshold
    assert all(d["score"] >= served for r in report["responses"] for d in r["detections"])  # the served default
    class_map = ClassMap(FRIDGE_CLASSES)
    found = kept = 0
    for record, response in zip(test, report["responses"]):
        detections = Detections.from_json(response["detections"], class_map)
        found += found_boxes(
            detections, {"boxes": record.boxes, "labels": [class_map.id(n) for n in record.labels]}, served
        )
        kept += len(detections.scores)
    boxes = sum(len(r.boxes) for r in test)
    print(f"{found} of {boxes} test boxes found, {kept - found} false")
    assert found / boxes >= QUICK_SAMPLE_MINIMUM["recall"] and found / kept >= QUICK_SAMPLE_MINIMUM["precision"]


@needs_312
@pytest.mark.slow
def test_arm64_zip_builds_within_quotas(tmp_path):
    try:
        native.compiler_for("arm64")
    except native.CompilerMissing as err:
        pytest.skip(f"{err} (Debian: gcc-aarch64-linux-gnu; .ci/run installs it as root)")
    report = package.build("arm64", "3.12", out_dir=tmp_path)
    assert report["zipped_bytes"] < package.ZIP_LIMIT
    archive = zipfile.ZipFile(report["zip"])
    assert any("aarch64" in n for n in archive.namelist() if n.endswith(".so"))
    kernel = archive.read("helpers/runtime/_letterbox_kernel.so")
    assert int.from_bytes(kernel[18:20], "little") == 183  # EM_AARCH64


def test_without_a_compiler_the_build_stops_unless_told_to_leave_the_kernel_out(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert package.main(["--arch", "arm64", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: no C compiler for arm64 (tried aarch64-linux-gnu-gcc); install one, "
        "or pass --without-kernel for NumPy preprocessing"
    ]
    assert not list(tmp_path.iterdir())
    root = tmp_path / "package"
    package._add_runtime(root, None, "arm64", kernel=False)  # what --without-kernel puts in
    assert (root / "helpers/runtime/preprocess.py").exists()
    assert not [p for p in root.rglob("*") if p.suffix in (".so", ".c")]


def test_bad_arguments_fail_before_building(tmp_path):
    with pytest.raises(ValueError, match="--arch"):
        package.build("sparc", out_dir=tmp_path)
    with pytest.raises(ValueError, match="model not found"):
        package.build("x86_64", model=tmp_path / "missing.onnx", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@needs_312
@pytest.mark.slow
def test_oversized_zip_is_refused(tmp_path):
    big = tmp_path / "big.onnx"
    big.write_bytes(__import__("os").urandom(30_000_000))  # incompressible: pushes the zip over 50 MB
    with pytest.raises(ValueError, match="direct-upload limit is 50 MB"):
        package.build("x86_64", model=big, out_dir=tmp_path / "dist")


def test_cli_exits_nonzero_with_one_line(capsys):
    assert package.main(["--model", "/nonexistent.onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: model not found: /nonexistent.onnx"]
