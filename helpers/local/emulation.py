"""Debian's aarch64 CPython under qemu-user, for running the arm64 zip on an x86_64 machine: the
sysroot (Debian's arm64 userland, fetched with a private apt index) and the sandbox that hides the CPU
sysfs as Lambda does. Test machinery: the arm64 check and the local invoke use it, the build does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from helpers.paths import ARTIFACTS_ROOT

QEMU = "qemu-aarch64-static"
#: Enough of Debian's arm64 userland for CPython, numpy, Pillow and onnxruntime.
SYSROOT_PACKAGES = (
    "libc6",
    "libgcc-s1",
    "libstdc++6",
    "zlib1g",
    "libbz2-1.0",
    "liblzma5",
    "libexpat1",
    "libffi8",
    "libssl3",
    "libuuid1",
    "python3.11-minimal",
    "libpython3.11-minimal",
    "libpython3.11-stdlib",
)
HIDDEN_SYSFS = "/sys/devices/system/cpu"


class EmulationUnavailable(RuntimeError):
    """This machine cannot run the arm64 check (no qemu-user, no apt, no namespaces); says which."""


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise EmulationUnavailable("not a Debian-family system: /etc/os-release names no VERSION_CODENAME")


def sysroot() -> Path:
    """Debian's aarch64 userland with CPython, unpacked once into the artefacts cache."""
    root = ARTIFACTS_ROOT / "cache" / f"sysroot-arm64-{_codename()}"
    if list(root.glob("usr/bin/python3.*")):
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise EmulationUnavailable("apt-get and dpkg are needed to fetch Debian's arm64 Python")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        state = Path(tmp)
        for folder in ("lists/partial", "cache/archives/partial", "debs", "root"):
            (state / folder).mkdir(parents=True)
        # A private package index for arm64: the system's sources, none of its state touched.
        options = [
            f"-oDir::State::Lists={state / 'lists'}",
            f"-oDir::Cache={state / 'cache'}",
            "-oAPT::Architecture=arm64",
            "-oAPT::Architectures::=arm64",
            "-oAPT::Sandbox::User=root" if os.geteuid() == 0 else "-oAPT::Sandbox::User=",
            "-oDebug::NoLocking=1",
            "-qq",
        ]
        for step in (["update"], ["download", *SYSROOT_PACKAGES]):
            done = subprocess.run(["apt-get", *options, *step], cwd=state / "debs", capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise EmulationUnavailable(f"apt-get {step[0]} for arm64 failed: {last}")
        for deb in sorted((state / "debs").glob("*.deb")):
            subprocess.run(["dpkg", "-x", str(deb), str(state / "root")], check=True)
        (state / "root").rename(root)
    return root


def emulated_arm64_command() -> tuple[list[str], str]:
    """The command that starts the emulated aarch64 CPython with the CPU sysfs hidden, and its version."""
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise EmulationUnavailable(f"{QEMU} not found: install Debian's qemu-user-static")
    if shutil.which("unshare") is None:
        raise EmulationUnavailable("unshare (util-linux) not found: it hides the CPU sysfs as Lambda does")
    root = sysroot()
    python = sorted(root.glob("usr/bin/python3.*"))[-1]
    # A private mount namespace (as an unprivileged user: a user namespace too) whose only change is an
    # empty tmpfs over the CPU sysfs, the folder cpuinfo reads and Lambda does not expose.
    namespace = ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    hide = f'mount -t tmpfs none {HIDDEN_SYSFS} && exec "$@"'
    probe = subprocess.run([*namespace, "sh", "-c", hide, "sh", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        raise EmulationUnavailable(f"cannot hide {HIDDEN_SYSFS} in a mount namespace: {probe.stderr.strip()}")
    return [*namespace, "sh", "-c", hide, "sh", qemu, "-L", str(root), str(python)], python.name.removeprefix("python")
