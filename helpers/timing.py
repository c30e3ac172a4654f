"""Latency measurement shared by the notebooks and the benchmark (never by unit tests)."""

from __future__ import annotations

import statistics
import time


def measure(fn, repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Call fn() repeatedly; p50/p90/min in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p90_ms": samples[min(len(samples) - 1, int(round(0.9 * (len(samples) - 1))))],
        "min_ms": samples[0],
        "n": len(samples),
    }
