"""Project metadata: environment.yml mirrors pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

from helpers.runtime.config import PREPROCESS, PreprocessConfig

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_installs_the_project_with_all_extras():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert {"lambda", "train", "deploy", "dev", "all"} <= set(extras)
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[all]"]
    assert set(re.findall(r"\[(.*)\]", extras["all"][0])[0].split(",")) == set(extras) - {"all"}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_exact_pins_that_parity_and_the_zip_depend_on():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "albumentations==2.0.8" in extras["train"]
    # The zip decodes and runs with exactly what training used (a JPEG decoder change moves pixels):
    # the packager installs the `lambda` extra itself, every entry an exact pin, and this
    # environment has those very versions.
    from importlib.metadata import version

    from helpers.build.package import LAMBDA_REQUIREMENTS

    assert LAMBDA_REQUIREMENTS == tuple(extras["lambda"])
    assert {re.split(r"[=<>!~]", d)[0].lower() for d in LAMBDA_REQUIREMENTS} == {"numpy", "pillow", "onnxruntime"}
    for pin in LAMBDA_REQUIREMENTS:
        assert re.fullmatch(r"[A-Za-z]+==[\d.]+", pin), pin
        name, pinned = pin.split("==")
        assert version(name) == pinned, pin


def test_preprocess_config_json_round_trip():
    assert PreprocessConfig.from_json(PREPROCESS.to_json()) == PREPROCESS
