"""Build the serving letterbox kernel (helpers/runtime/letterbox_kernel.c) as a plain shared library.

    python -m helpers native            # build it next to its source for this machine (development)

The zip gets its own build for its architecture (helpers.build.package); the runtime loads the library with
ctypes when it is there and otherwise runs the NumPy path, which gives the same numbers more slowly.
It is a C-ABI library, not a Python extension, so one build serves every CPython version.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.build.arch import ARCHITECTURES
from helpers.paths import shown
from helpers.runtime import kernel

SOURCE = Path(kernel.__file__).with_name("letterbox_kernel.c")
#: -ffp-contract=off: no fused multiply-add, so (pixel - mean) * denominator rounds as NumPy's two
#: float32 steps do; the baseline ISA of each architecture (no -march), as the Lambda hosts vary.
FLAGS = ("-std=c11", "-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-stack-protector", "-s", "-Wall", "-Werror")
#: The checked build (tests/test_kernel_sanitized.py): AddressSanitizer and UBSan, any report fatal. It
#: needs libasan first in the process (LD_PRELOAD), so it is never the one the runtime loads.
SANITIZE_FLAGS = (
    *(flag for flag in FLAGS if flag not in ("-O3", "-s", "-fno-stack-protector")),
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
)


class CompilerMissing(RuntimeError):
    """No C compiler for the requested architecture."""


def compiler_for(arch: str) -> str:
    machine, candidates = ARCHITECTURES[arch].machine, ARCHITECTURES[arch].compilers
    if machine != platform.machine():  # cross build: only the cross compiler targets it
        candidates = tuple(c for c in candidates if c.startswith(machine))
    elif os.environ.get("CC"):  # as conda's compiler packages and most build setups set it
        candidates = (os.environ["CC"], *candidates)
    found = next((shutil.which(c) for c in candidates if shutil.which(c)), None)
    if found is None:
        raise CompilerMissing(f"no C compiler for {arch} (tried {', '.join(candidates)})")
    return found


def compiler_version(arch: str) -> str:
    """The compiler's first version line, or why there is none (part of the zip's fingerprint)."""
    try:
        command = [compiler_for(arch), "--version"]
    except CompilerMissing as err:
        return str(err)
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[0]


def host_arch() -> str:
    """This machine's architecture in Lambda's words (x86_64, arm64)."""
    found = next((a.name for a in ARCHITECTURES.values() if a.machine == platform.machine()), None)
    if found is None:
        raise CompilerMissing(f"this machine ({platform.machine()}) is neither of Lambda's x86_64 and arm64")
    return found


def build(out: Path, arch: str | None = None, sanitize: bool = False) -> Path:
    """Compile the kernel for `arch` (default: this machine's) into `out`, replacing any previous
    build in one step (a process may have the old one mapped); `sanitize`: the checked build."""
    arch = arch or host_arch()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    command = [compiler_for(arch), *(SANITIZE_FLAGS if sanitize else FLAGS), "-o", str(partial), str(SOURCE)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"building {SOURCE.name} failed: {completed.stderr.strip()}")
    partial.replace(out)
    return out


def build_in_place() -> bool:
    """The development build, next to the source where the runtime looks, (re)built when missing or
    older than the source; True if it was. The runtime loads the new build on its next call."""
    out = kernel.KERNEL_PATH
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return False
    build(out)
    kernel.load_kernel.cache_clear()
    return True


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    try:
        built = build_in_place()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'built' if built else 'up to date:'} {shown(kernel.KERNEL_PATH)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
