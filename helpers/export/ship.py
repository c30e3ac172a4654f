"""Which model ships, decided on the test images by a stated rule: INT8 when its test mAP@0.5 is not
below the 95% bootstrap interval of FP32's (at least its lower end) and it serves a request at least MIN_SPEEDUP times as fast
end to end (decode, letterbox, inference, restore of a test JPEG, the two models interleaved); else FP32.

The decision is a file beside the models (shipped.json); the zip, `deploy`, `serve`, the batch runner
and the notebooks serve the model it names and print its reason. `--model` overrides it anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

from helpers.evaluate.intervals import bootstrap, image_statistics, paired_difference
from helpers.evaluate.metrics import served_predictions
from helpers.runtime.contract import served_threshold
from helpers.runtime.decode import decode_for_model
from helpers.runtime.model import Detector

MIN_SPEEDUP = 1.3
TIMED_REQUESTS = 20  # per model, interleaved, after one warm-up each
TIMED_IMAGES = 5  # the first test images, in turn
SETTLE_S = 0.05


@dataclasses.dataclass(frozen=True)
class ShipDecision:
    """The chosen model's file name (beside the other) and the figures the rule read."""

    model: str
    reason: str
    images: int
    threshold: float
    fp32_map_50: float
    fp32_map_50_interval: list[float]
    int8_map_50: float
    difference_interval: list[float]  # FP32 - INT8 mAP@0.5, paired over the same resamples
    fp32_ms: float
    int8_ms: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> ShipDecision:
        return cls(**json.loads(Path(path).read_text()))


def request_ms(
    detectors: list[Detector], images: list[bytes], threshold: float, repeats: int = TIMED_REQUESTS
) -> list[float]:
    """Median end-to-end milliseconds of each detector per request, interleaved so that the host's load
    falls on all of them alike; round r sends images[r % len(images)]. Each timed request follows a
    SETTLE_S pause, as requests reach a Lambda apart: back to back, one session's still-spinning ONNX
    Runtime workers would slow the other's request (the benchmark's timing.interleaved does the same)."""
    times: list[list[float]] = [[] for _ in detectors]
    for round_ in range(repeats + 1):
        data = images[round_ % len(images)]
        for detector, measured in zip(detectors, times):
            time.sleep(SETTLE_S)
            started = time.perf_counter()
            detector.predict(decode_for_model(data, detector.config.image_size), threshold, 100)
            if round_:  # the first round warms each session up
                measured.append((time.perf_counter() - started) * 1e3)
    return [statistics.median(t) for t in times]


def int8_qualifies(fp32_map_50_low: float, int8_map_50: float, speedup: float) -> tuple[bool, bool]:
    """The rule's two halves: (INT8's mAP@0.5 is not below FP32's interval, INT8 is fast enough)."""
    return fp32_map_50_low <= int8_map_50, speedup >= MIN_SPEEDUP


def decide(fp32_path: Path, int8_path: Path, test_records, threads: int = 2) -> ShipDecision:
    """Apply the rule to the two models on the test records (served pipeline, served threshold)."""
    fp32, int8 = Detector(fp32_path, threads=threads), Detector(int8_path, threads=threads)
    threshold = served_threshold(None, None, fp32.contract.score_threshold)
    stats = []
    for detector in (fp32, int8):
        predictions, targets = served_predictions(detector, test_records)
        stats.append(image_statistics(predictions, targets, detector.class_map.names, threshold))
    fp32_interval, difference = bootstrap(stats[0])["map_50"], paired_difference(*stats)["map_50"]
    int8_map_50 = fp32_interval.estimate - difference.estimate
    timed = [r.image_path.read_bytes() for r in test_records[:TIMED_IMAGES]]
    fp32_ms, int8_ms = request_ms([fp32, int8], timed, threshold)
    accurate, fast = int8_qualifies(fp32_interval.low, int8_map_50, fp32_ms / int8_ms)
    reason = (
        f"INT8's test mAP@0.5 {int8_map_50:.3f} is {'not below' if accurate else 'below'} FP32's interval "
        f"[{fp32_interval.low:.3f}, {fp32_interval.high:.3f}] and it serves a request in {int8_ms:.1f} ms "
        f"against {fp32_ms:.1f} ms ({fp32_ms / int8_ms:.2f}x, {'at least' if fast else 'under'} {MIN_SPEEDUP}x)"
    )
    return ShipDecision(
        model=int8_path.name if accurate and fast else fp32_path.name,
        reason=reason,
        images=len(test_records),
        threshold=threshold,
        fp32_map_50=fp32_interval.estimate,
        fp32_map_50_interval=[fp32_interval.low, fp32_interval.high],
        int8_map_50=int8_map_50,
        difference_interval=[difference.low, difference.high],
        fp32_ms=round(fp32_ms, 2),
        int8_ms=round(int8_ms, 2),
    )
