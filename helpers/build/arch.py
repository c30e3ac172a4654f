"""The one table of Lambda architectures: what the packager, the kernel build and the deployer each
need to know about x86_64 and arm64."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str  # Lambda's name, as in the template's Architectures
    machine: str  # uname -m, and the manylinux wheel suffix
    compilers: tuple[str, ...]  # C compilers that target it, best first
    elf_machine: int  # e_machine in an ELF header

    @property
    def triplet(self) -> str:
        """The GNU triplet in an extension module's file name (`*.cpython-312-x86_64-linux-gnu.so`)."""
        return f"{self.machine}-linux-gnu"


#: arm64 from x86_64 needs Debian's gcc-aarch64-linux-gnu (`.ci/run` installs it).
ARCHITECTURES = {
    "x86_64": Architecture("x86_64", "x86_64", ("x86_64-linux-gnu-gcc", "gcc", "cc"), 62),
    "arm64": Architecture("arm64", "aarch64", ("aarch64-linux-gnu-gcc",), 183),
}
