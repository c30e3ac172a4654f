"""The memory table (helpers.measure.lambda_share): Lambda's CPU share as a real cgroup quota on the
handler's process, its billing arithmetic, and the rule that picks MEMORY_MB from the measured rows."""

import os

import pytest

from helpers.measure import lambda_share
from helpers.measure.lambda_share import choose_memory, cpu_share, usd_per_million


def test_the_share_is_lambdas_documented_rate():
    assert cpu_share(1769) == 1.0
    assert cpu_share(128) == pytest.approx(128 / 1769)
    assert cpu_share(10240) == pytest.approx(10240 / 1769)  # 5.79: Lambda's "up to 6 vCPUs"
    assert cpu_share(20000) == lambda_share.MAX_VCPUS


def test_cost_is_billed_milliseconds_times_gigabytes_plus_the_request_fee():
    # 50 ms at 1 GB: 0.05 GB-s x $0.0000166667 = $8.33e-7 per request, $0.83 per 1M, plus $0.20.
    assert usd_per_million(50, 1024) == pytest.approx(0.05 * 0.0000166667 * 1e6 + 0.20)
    assert usd_per_million(50, 2048) > usd_per_million(50, 1024)


def _row(memory_mb, p90_ms, usd, fits=True):
    return {"memory_mb": memory_mb, "p90_ms": p90_ms, "usd_per_million": usd, "fits": fits}


def test_the_choice_is_the_cheapest_fitting_size_within_the_budget():
    rows = [_row(128, 900, 1.0, fits=False), _row(512, 150, 1.1), _row(1024, 80, 1.5), _row(1769, 45, 1.5)]
    assert choose_memory(rows, 100)["memory_mb"] == 1024  # 1769 costs the same: the smaller size wins
    assert choose_memory(rows, 1000)["memory_mb"] == 512  # 128 MB is cheapest but does not fit
    assert choose_memory(rows, 10)["memory_mb"] == 1769  # none within: the fastest that fits


@pytest.fixture(scope="module")
def rows(tiny_model, sample_records):
    if reason := lambda_share.available():
        pytest.skip(reason)
    return lambda_share.sweep(tiny_model, sample_records[0].image_path, sizes=(256, 3538), requests=2)


def test_a_small_share_is_enforced_as_a_quota_and_the_whole_machine_is_not(rows):
    small, large = rows
    assert (small["memory_mb"], large["memory_mb"]) == (256, 3538)
    assert small["quota_cpus"] == pytest.approx(256 / 1769, abs=1e-3)
    assert small["throttled_periods"] > 0  # the cold init alone overruns 14 ms of CPU per 100 ms
    assert large["quota_cpus"] == min(os.cpu_count(), large["vcpus"]) and large["throttled_periods"] == 0
    assert large["fits"]  # 256 MB may not be: Python with ONNX Runtime alone is ~100 MB
    assert small["peak_rss_mb"] == pytest.approx(large["peak_rss_mb"], rel=0.3)  # a quota costs time, not memory
    for row in rows:
        assert 0 < row["p50_ms"] <= row["p90_ms"]
        assert row["usd_per_million"] > lambda_share.LAMBDA_PRICE["per_million_requests_usd"]


@pytest.mark.parametrize("sizes", ["512,lots", "1e3"])
def test_the_memory_command_refuses_sizes_that_are_not_whole_megabytes(sizes, capsys):
    from helpers.measure.memory import main

    assert main(["--sizes", sizes, "--model", "missing.onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --sizes must be comma-separated whole MB") and "\n" not in err
