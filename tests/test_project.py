"""Project metadata: requirements.lock and environment.yml agree with pyproject.toml."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers.runtime.config import PREPROCESS, PreprocessConfig

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PROJECT = "fridge-lambda-helpers"


def _lock_entries() -> dict[str, tuple[Requirement, list[str], list[str]]]:
    """requirements.lock as {canonical name: (requirement, sha256 hashes, what it is required by)}."""
    entries: dict[str, tuple[Requirement, list[str], list[str]]] = {}
    current = None
    logical = ""
    for line in LOCK.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if current is not None:  # pip-compile's annotations: "# via a" or "# via" then "#   a" lines
                via = stripped.lstrip("#").strip().removeprefix("via").strip()
                if via and not via.startswith("-r "):
                    current[2].append(via)
            continue
        logical += line.rstrip().removesuffix("\\")
        if line.rstrip().endswith("\\") or not stripped:
            continue
        spec, *hashes = logical.split("--hash=")
        logical = ""
        assert not spec.strip().startswith("-"), f"an option or editable line in the lock: {spec}"
        requirement = Requirement(spec.strip())
        name = canonicalize_name(requirement.name)
        assert name not in entries, f"{name} twice in the lock"
        current = entries[name] = (requirement, [h.strip() for h in hashes], [])
    return entries


def _pyproject_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    requirements = [Requirement(r) for extra in extras.values() for r in extra]
    return [r for r in requirements if canonicalize_name(r.name) != PROJECT]


def _pinned_version(requirement: Requirement) -> Version:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==" and "*" not in specifier.version, requirement
    return Version(specifier.version)


def test_lock_pins_every_package_exactly_with_hashes():
    entries = _lock_entries()
    assert len(entries) > 50, "the lock looks empty"
    assert PROJECT not in entries  # the project is installed from the work tree, --no-deps
    for name, (requirement, hashes, _) in entries.items():
        _pinned_version(requirement)
        assert not requirement.url and not requirement.extras, name
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    # pip and setuptools are pinned too: the project installs with --no-build-isolation from the lock's
    # setuptools, which must satisfy [build-system].
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, [*build, "pip"]):
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{name} is not in the lock"
        assert _pinned_version(entries[name][0]) in requirement.specifier, requirement


def test_lock_satisfies_every_requirement_of_pyprojects_extras():
    entries = _lock_entries()
    for requirement in _pyproject_requirements():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is in pyproject.toml but not in {LOCK.name}: run `make lock`"
        pinned = _pinned_version(entries[name][0])
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"{LOCK.name} pins {name}=={pinned}, outside pyproject.toml's {requirement}: run `make lock`"
        )


def test_the_locks_top_level_requirements_are_pyprojects():
    # pip-compile notes what each pin is there for; those there for the project itself are exactly the
    # requirements of pyproject.toml's extras (none left over from a requirement since removed).
    top_level = {name for name, (_, _, via) in _lock_entries().items() if any(v.startswith(PROJECT) for v in via)}
    assert top_level == {canonicalize_name(r.name) for r in _pyproject_requirements()}


@pytest.mark.parametrize("target", ["$(VENV)/.installed:", "lock:"])
def test_make_installs_from_the_lock(target):
    makefile = (ROOT / "Makefile").read_text()
    assert f"LOCK := {LOCK.name}" in makefile
    rule = makefile.split(f"\n{target}", 1)[1].split("\n\n", 1)[0]
    if target == "lock:":
        # The `all` extra's parts (naming `all` itself would lock the project as a file:// URL).
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        (everything,) = extras["all"]
        assert "pip-compile" in rule and "--generate-hashes" in rule
        assert set(re.findall(r"--extra (\w+)", rule)) == Requirement(everything).extras == set(extras) - {"all"}
    else:
        assert rule.split("|")[0].split() == ["$(LOCK)", "pyproject.toml"]  # editing the lock reinstalls
        assert "--require-hashes -r $(LOCK)" in rule and "--no-deps" in rule


def test_environment_yml_installs_the_project_with_all_extras():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert {"lambda", "train", "deploy", "dev", "all"} <= set(extras)
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # The lock is the `all` extra resolved: conda's pip installs exactly it (hash-checked, as the lock
    # carries hashes), and the header tells to add the project itself with --no-deps as `make setup` does.
    assert pip_section == [f"-r {LOCK.name}"]
    assert (ROOT / "environment.yml").read_text().count("pip install --no-deps --no-build-isolation -e .") == 1
    assert set(re.findall(r"\[(.*)\]", extras["all"][0])[0].split(",")) == set(extras) - {"all"}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    # The Python the lock was resolved for.
    assert f"CPython {python.split('=')[1]} on Linux x86_64" in LOCK.read_text()


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
