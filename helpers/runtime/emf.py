"""CloudWatch Embedded Metric Format: one JSON log line that CloudWatch turns into metrics.

Written by hand, not with Powertools for AWS Lambda: Powertools would cost more zip size and cold
import time than the budget allows (docs/decisions.md), and the format itself is a few lines. Spec:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
"""

from __future__ import annotations

import json
import time

#: The CloudWatch units the handler's metrics use (the spec allows only CloudWatch's unit names).
MILLISECONDS, COUNT, NONE = "Milliseconds", "Count", "None"
MAX_METRICS = 100  # per metric directive
MAX_DIMENSIONS = 30  # per dimension set


def metric_line(
    namespace: str,
    dimensions: dict[str, str],
    metrics: dict[str, tuple[float, str]],
    properties: dict | None = None,
    timestamp_ms: int | None = None,
) -> str:
    """The EMF log line: `metrics` {name: (value, unit)} under `namespace`, dimensioned by every key of
    `dimensions` together; `properties` ride along as searchable fields, not metrics."""
    if not 0 < len(metrics) <= MAX_METRICS or len(dimensions) > MAX_DIMENSIONS:
        raise ValueError(f"EMF allows 1-{MAX_METRICS} metrics and at most {MAX_DIMENSIONS} dimensions")
    clash = set(metrics) & (set(dimensions) | set(properties or {}))
    if clash:
        raise ValueError(f"metric names clash with other members: {sorted(clash)}")
    return json.dumps(
        {
            "_aws": {
                "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
                "CloudWatchMetrics": [
                    {
                        "Namespace": namespace,
                        "Dimensions": [list(dimensions)],
                        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                    }
                ],
            },
            **(properties or {}),
            **dimensions,
            **{name: value for name, (value, _) in metrics.items()},
        }
    )


def request_metrics(
    status: int,
    timings_ms: dict[str, float],
    cold: bool,
    init_ms: float | None = None,
    size: tuple[int, int] | None = None,
    detections: int = 0,
) -> dict[str, tuple[float, str]]:
    """The handler's metrics for one request: stage latencies ({stage}Ms), 4xx/5xx, cold start (with the
    init's duration when known: None after a SnapStart restore) and, for an answered image (`size`
    (width, height)), its detections and megapixels."""
    metrics = {
        "ColdStart": (int(cold), COUNT),
        "ClientErrors": (int(400 <= status < 500), COUNT),
        "ServerErrors": (int(status >= 500), COUNT),
        **{f"{stage.capitalize()}Ms": (round(value, 2), MILLISECONDS) for stage, value in timings_ms.items()},
    }
    if cold and init_ms is not None:
        metrics["InitMs"] = (round(init_ms, 1), MILLISECONDS)
    if size is not None:
        metrics["Detections"] = (detections, COUNT)
        metrics["ImageMegapixels"] = (round(size[0] * size[1] / 1e6, 3), NONE)
    return metrics
