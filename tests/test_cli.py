"""Every CLI fails with exit code 2 and one clear line, before doing any work."""

import json
import subprocess
import sys

import pytest

from helpers.__main__ import COMMANDS
from helpers.data import dataset as fridge_data
from helpers.data.convert import convert
from helpers.data.formats import LAYOUTS


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["-m", "helpers", "train", "--dataset", "/nonexistent", "--epochs", "1"],
            "error: dataset '/nonexistent': not fridge or sample, nor a folder",
        ),
        (
            ["-m", "helpers.data", "convert", "/nonexistent", "--to", "coco", "/tmp/never-written"],
            "error: /nonexistent: no such dataset folder",
        ),
        (["-m", "helpers", "export", "/nonexistent.ckpt"], "error: checkpoint not found: /nonexistent.ckpt"),
        (["-m", "helpers", "package", "--model", "/nonexistent.onnx"], "error: model not found: /nonexistent.onnx"),
        (["-m", "helpers", "invoke", "/nonexistent.zip", "x.jpg"], "error: file not found: /nonexistent.zip"),
        (
            [
                "-m",
                "helpers.aws.deploy",
                "up",
                "--bucket",
                "ok-bucket",
                "--zip",
                "/nonexistent.zip",
                "--endpoint-url",
                "http://127.0.0.1:9",
            ],
            "error: zip not found: /nonexistent.zip",
        ),
        (
            ["-m", "helpers", "frobnicate"],
            "usage: python -m helpers COMMAND [options]; COMMAND is one of " + ", ".join(COMMANDS),
        ),
    ],
)
def test_cli_errors(args, message):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("!")]
    assert lines == [message], result.stderr


@pytest.mark.slow  # three train CLI runs (20 s)
def test_train_refuses_bad_data_in_one_line_and_skip_bad_says_how_many_it_left_out(tmp_path):
    """A dataset folder the train CLI cannot use is one line naming the file; --skip-bad trains without it."""
    yolo = tmp_path / "yolo"
    convert(fridge_data.SAMPLE_DIR, "yolo", yolo)
    label = yolo / "labels" / "10.txt"
    label.write_text(label.read_text().replace("0 0.30", "7 0.30", 1))
    (tmp_path / "empty").mkdir()
    train = [sys.executable, "-m", "helpers", "train", "--epochs", "1", "--dataset"]
    refusals = {
        str(yolo): f"error: {label}:1: class id 7 has no name (4 in data.yaml)",
        str(tmp_path / "empty"): f"error: {tmp_path / 'empty'}: cannot tell the format; expected {LAYOUTS}",
    }
    for dataset, message in refusals.items():
        result = subprocess.run([*train, dataset], capture_output=True, text=True, timeout=120)
        assert (result.returncode, result.stderr.splitlines()) == (2, [message]), result.stderr
    skipped = subprocess.run(
        [*train, str(yolo), "--skip-bad", "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stderr.splitlines() == [
        f"note: skipped: {refusals[str(yolo)].removeprefix('error: ')}",
        f"note: {yolo}: --skip-bad skipped 1 bad image(s) or label(s)",
    ]
    assert json.loads(skipped.stdout)["images"] == 5


def test_the_arm64_check_refuses_without_the_cross_compiler_before_building_anything(monkeypatch, tmp_path, capsys):
    """Emulation present (stood in for here), the aarch64 compiler hidden from PATH: one line, exit 2,
    and no zip built (it used to build the x86_64 zip first)."""
    import shutil

    from helpers.build import package
    from helpers.local import arm64, emulation

    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("gcc", "cc", "x86_64-linux-gnu-gcc"):
        if found := shutil.which(tool):
            (bare / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bare))
    monkeypatch.setattr(emulation, "emulated_arm64_command", lambda: (["qemu-aarch64-static"], "3.12"))
    monkeypatch.setattr(package, "build", lambda *a, **k: pytest.fail("built a zip before the checks"))
    model = tmp_path / "model.onnx"
    model.write_bytes(b"checked later")
    assert arm64.main(["--model", str(model)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: cannot emulate arm64 here: no C compiler for arm64 (tried aarch64-linux-gnu-gcc): "
        "install Debian's gcc-aarch64-linux-gnu"
    )
