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
    return {**percentiles(samples), "min_ms": min(samples), "n": len(samples)}


#: The pause in which thread pools left spinning by the previous timed call go to sleep (see interleaved).
SETTLE_S = 0.05


def interleaved(runs: dict, repeats: int, warmup: int = 1, settle_s: float = SETTLE_S) -> dict[str, dict[str, float]]:
    """{name: p50/p90 ms} of several contenders timed in turn, round after round, so that host noise hits
    every contender alike (ratios between them are then fair on a shared machine).

    settle_s: a pause before each timed call (not timed) in which the thread pools the previous
    contender left spinning go to sleep, so each is timed as if it ran alone, as in a Lambda (ONNX
    Runtime's and OpenCV's workers spin after their work and would slow the next contender)."""
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            time.sleep(settle_s)
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: percentiles(values) for name, values in samples.items()}


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 (the median) and p90 (the sorted sample at index round(0.9 * (n - 1)), no interpolation)
    of latencies in milliseconds."""
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))],
    }
