"""The letterbox kernel's build: self-contained, per architecture, and a clear line when it cannot be built."""

import subprocess

import pytest

from helpers.build import native
from helpers.runtime import kernel

ELF_MACHINE = {"x86_64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


def _elf_machine(path):
    return int.from_bytes(path.read_bytes()[18:20], "little")


def test_the_kernel_needs_nothing_from_libc(tmp_path):
    """No symbol to resolve at load: it loads under any glibc (Lambda's python3.12 has 2.34)."""
    out = native.build(tmp_path / "kernel.so", "x86_64")
    assert _elf_machine(out) == ELF_MACHINE["x86_64"]
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(out)], capture_output=True, text=True, check=True)
    strong = [line.split()[-1] for line in undefined.stdout.splitlines() if line.split()[0] != "w"]
    assert strong == []
    exported = subprocess.run(["nm", "-D", "--defined-only", str(out)], capture_output=True, text=True, check=True)
    assert "helpers_letterbox" in exported.stdout


def test_the_development_build_is_what_the_runtime_loads():
    assert native.build_in_place() is False  # conftest built it; the source has not changed since
    assert kernel.load_kernel() is not None and kernel.load_kernel().__name__ == "helpers_letterbox"


def test_arm64_kernel_cross_builds(tmp_path):
    try:
        native.compiler_for("arm64")
    except native.CompilerMissing as err:
        pytest.skip(f"{err} (Debian: gcc-aarch64-linux-gnu; .ci/run installs it as root)")
    assert _elf_machine(native.build(tmp_path / "kernel.so", "arm64")) == ELF_MACHINE["arm64"]


def test_cli_says_in_one_line_that_no_compiler_was_found(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(kernel, "KERNEL_PATH", tmp_path / "_letterbox_kernel.so")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no C compiler for x86_64 (tried x86_64-linux-gnu-gcc, gcc, cc)"]
    assert not (tmp_path / "_letterbox_kernel.so").exists()
