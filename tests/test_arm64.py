"""arm64 under emulation: the arm64 zip on Debian's aarch64 CPython (qemu-user), CPU sysfs hidden as in
Lambda, answers like the x86_64 zip. Skips, saying why, where qemu-user or the arm64 sysroot cannot be had."""

import base64
import copy

import pytest

from helpers.local import arm64, emulation
from helpers.runtime import handler as h


def test_equal_responses_compare_equal_and_any_real_difference_is_caught(tiny_model, sample_jpegs):
    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""})
    responses = [
        h.handler({"image": base64.b64encode(data).decode(), "threshold": 0.3}, None) for data in sample_jpegs.values()
    ]
    assert sum(len(r["detections"]) for r in responses) > 0
    assert arm64.compare_responses(responses, copy.deepcopy(responses))["equal"]
    index = next(i for i, r in enumerate(responses) if r["detections"])
    moved, relabelled, fewer = (copy.deepcopy(responses) for _ in range(3))
    moved[index]["detections"][0]["box"][0] += 2 * arm64.BOX_TOLERANCE_PX
    relabelled[index]["detections"][0]["label"] = "not-a-fridge-object"
    fewer[index]["detections"].pop()
    for changed in (moved, relabelled, fewer):
        assert not arm64.compare_responses(responses, changed)["equal"]


def test_cli_says_in_one_line_why_it_cannot_run(capsys, monkeypatch, tiny_model):
    monkeypatch.setattr(emulation, "QEMU", "qemu-nowhere-static")
    assert arm64.main(["--model", str(tiny_model)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: cannot emulate arm64 here: qemu-nowhere-static not found: install Debian's qemu-user-static"
    )
    assert arm64.main(["--model", "/nonexistent.onnx"]) == 2
    assert capsys.readouterr().err.strip() == "error: model not found: /nonexistent.onnx"


@pytest.mark.slow
def test_arm64_zip_under_emulation_answers_like_x86_64(onnx_model, sample_records):
    try:
        emulation.emulated_arm64_command()
    except emulation.EmulationUnavailable as why:
        pytest.skip(f"arm64 emulation unavailable: {why}")
    images = [r.image_path for r in sample_records[:2]]
    result = arm64.check(images, onnx_model)
    assert result["arm64_python"].startswith("3.")
    # The Lambda condition was reproduced: cpuinfo could not read the CPU lists, and inference went on.
    assert any("/sys/devices/system/cpu/possible" in line for line in result["cpuinfo_messages"])
    assert result["onnxruntime_extension_loaded"] and "aarch64" in result["onnxruntime_extension_loaded"][0]
    assert result["detections"]["arm64"] == result["detections"]["x86_64"] > 0
    assert result["equal"], result
    # The arm64 build of the letterbox kernel ran in the zip and gave the x86_64 zip's exact model inputs.
    assert result["letterbox_kernel_loaded"] and result["model_inputs_bit_identical"]
