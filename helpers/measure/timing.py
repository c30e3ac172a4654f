"""Latency measurement shared by the notebooks and the benchmark (never by unit tests)."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

#: The x86 flags of int8 dot-product instructions, which decide how much INT8 gains over FP32.
VNNI_FLAGS = {"avx512_vnni", "avx_vnni"}


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU a timing ran on: its model name and whether it has VNNI (Linux's /proc/cpuinfo, else
    the platform's processor name). The same machine kind may be an Intel or an AMD host."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    vnni = "with" if VNNI_FLAGS & set(fields.get("flags", "").split()) else "without"
    return f"{name}, {vnni} int8 dot-product instructions (VNNI)"


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


def op_profile(model_path, inputs: dict, threads: int = 2, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per run spent in each operator type, from ONNX Runtime's own profiler (its kernel
    times, summed over the nodes of each type), largest first. The first run (graph warm-up) is left out."""
    import json
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = f"{folder}/profile"
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        session.run(None, inputs)
        for _ in range(repeats):
            session.run(None, inputs)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    timed_from = runs[0]["ts"] + runs[0]["dur"] if runs else 0  # after the warm-up run
    per_op: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            op = event["args"]["op_name"]
            per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1e3 / repeats
    return dict(sorted(per_op.items(), key=lambda item: -item[1]))
