"""The Python interpreters the build and the local checks run: a CPython of a given version (PATH or
pyenv), and Lambda's wheels installed for an architecture. (Debian's aarch64 CPython under qemu-user,
test machinery, is helpers.local.emulation.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.build.arch import ARCHITECTURES

#: Up to Amazon Linux 2023's glibc 2.34 (the python3.12/3.13 runtimes). pip does not expand older
#: manylinux tags from one --platform: every accepted tag is passed.
MANYLINUX_TAGS = ("manylinux2014", "manylinux_2_17", "manylinux_2_27", "manylinux_2_28", "manylinux_2_34")


def find_python(version: str) -> Path | None:
    """A working CPython `version` interpreter: PATH first (pyenv shims may not run), then pyenv's
    versions folder."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.path.expanduser("~/.pyenv")
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}"), reverse=True)
    for candidate in filter(None, candidates):
        check = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if check.returncode == 0 and check.stdout.strip() == str(tuple(map(int, version.split(".")))):
            return Path(candidate)
    return None


def pip_install(target: Path, arch: str, python: str, requirements: tuple[str, ...]) -> None:
    """Install binary wheels of `requirements` for Lambda's `arch` and CPython `python` into `target`."""
    platforms = [arg for tag in MANYLINUX_TAGS for arg in ("--platform", f"{tag}_{ARCHITECTURES[arch].machine}")]
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--target",
        str(target),
        "--no-compile",
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--abi",
        f"cp{python.replace('.', '')}",
        *platforms,
        *requirements,
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ValueError(f"pip could not install {', '.join(requirements)} for {arch}/cp{python}: {last}")
