"""CloudWatch Embedded Metric Format lines from the handler, checked against the EMF specification."""

import base64
import json
import re

import pytest

from helpers.runtime import emf, settings
from helpers.runtime import handler as h

#: CloudWatch's unit names, the only ones the EMF specification accepts.
UNITS = {
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
}


def assert_follows_the_emf_spec(document: dict) -> None:
    """The specification's rules: _aws.Timestamp in epoch ms; each directive a Namespace (1-255 chars),
    dimension sets of at most 30 names that are top-level string members, at most 100 metric
    definitions whose names are top-level numeric members and whose units are CloudWatch units."""
    meta = document["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    assert meta["CloudWatchMetrics"]
    for directive in meta["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and 1 <= len(directive["Namespace"]) <= 255
        assert re.fullmatch(r"[^:].*", directive["Namespace"])  # may not start with ":"
        for dimension_set in directive["Dimensions"]:
            assert len(dimension_set) <= 30
            assert all(isinstance(document[name], str) for name in dimension_set)
        assert 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert 1 <= len(metric["Name"]) <= 255 and metric["Unit"] in UNITS
            value = document[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            assert values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _metric_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def test_each_request_emits_one_spec_conformant_line(tiny_model, sample_jpegs, lambda_context, capsys):
    state = h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING"})
    image = base64.b64encode(sample_jpegs["10.jpg"]).decode()
    first = h.handler({"image": image}, lambda_context)
    bad = h.handler({"image": "%%%"}, lambda_context)
    warm = h.handler({"image": image}, lambda_context)
    lines = _metric_lines(capsys.readouterr().out)
    assert len(lines) == 3
    for line in lines:
        assert_follows_the_emf_spec(line)
        assert line["Model"] == state.detector.model_id and line["request_id"] == lambda_context.aws_request_id
        assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == settings.DEFAULT_METRICS_NAMESPACE
    cold_line, error_line, warm_line = lines
    assert (cold_line["ColdStart"], warm_line["ColdStart"], error_line["ColdStart"]) == (1, 0, 0)
    assert cold_line["InitMs"] == round(state.init_ms, 1) and "InitMs" not in warm_line
    for line, response in ((cold_line, first), (warm_line, warm)):
        stages = {stage: line[f"{stage.capitalize()}Ms"] for stage in response["timings_ms"]}
        assert stages == response["timings_ms"]  # the same figures the response reports
        assert line["Detections"] == len(response["detections"]) and line["ImageMegapixels"] == 0.332
        assert (line["ClientErrors"], line["ServerErrors"], line["status"]) == (0, 0, 200)
    assert bad["statusCode"] == 400
    assert (error_line["ClientErrors"], error_line["ServerErrors"], error_line["status"]) == (1, 0, 400)
    assert "Detections" not in error_line and error_line["TotalMs"] > 0


def test_an_empty_namespace_turns_metrics_off(tiny_model, sample_jpegs, lambda_context, capsys):
    h.init({"MODEL_PATH": str(tiny_model), "LOG_LEVEL": "WARNING", "METRICS_NAMESPACE": ""})
    h.handler({"image": base64.b64encode(sample_jpegs["10.jpg"]).decode()}, lambda_context)
    assert _metric_lines(capsys.readouterr().out) == []


def test_metric_line_refuses_what_the_spec_forbids():
    with pytest.raises(ValueError, match="1-100 metrics"):
        emf.metric_line("ns", {}, {})
    with pytest.raises(ValueError, match="1-100 metrics"):
        emf.metric_line("ns", {}, {f"m{i}": (1, emf.COUNT) for i in range(101)})
    with pytest.raises(ValueError, match="clash"):
        emf.metric_line("ns", {"Model": "x"}, {"Model": (1, emf.COUNT)})
    line = json.loads(
        emf.metric_line("ns", {"Model": "x"}, {"Latency": (3.5, emf.MILLISECONDS)}, timestamp_ms=1_700_000_000_000)
    )
    assert_follows_the_emf_spec(line)
    assert line["_aws"]["Timestamp"] == 1_700_000_000_000 and line["Latency"] == 3.5
