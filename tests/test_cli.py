"""Every CLI fails with exit code 2 and one clear line, before doing any work."""

import subprocess
import sys

import pytest

from helpers.__main__ import COMMANDS


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["-m", "helpers", "train", "--dataset", "/nonexistent", "--epochs", "1"],
            "error: dataset '/nonexistent': not fridge or sample, nor a folder with images/ and annotations/",
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
