"""The CPUs this process may use, the one count behind every thread pool and ONNX Runtime session."""

from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity on Linux, where Lambda gives ~1 vCPU per 1,769 MB of
    memory), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
