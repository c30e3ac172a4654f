"""The timer every benchmark figure comes from."""

import pytest

from helpers.measure import timing
from helpers.measure.timing import percentiles


def test_percentiles_take_the_median_and_the_sorted_sample_at_90_percent():
    assert percentiles([10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]) == {"p50_ms": 5.5, "p90_ms": 9.0}


class FakeClock:
    """time.perf_counter and time.sleep on a clock that moves only when told: exact figures on any host."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds

    def work(self, ms):
        self.now += ms / 1e3


def test_interleaved_times_each_contender_without_its_settling_pause(monkeypatch):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(timing, "time", clock)
    result = timing.interleaved(
        {"fast": lambda: (calls.append("fast"), clock.work(1)), "slow": lambda: (calls.append("slow"), clock.work(10))},
        repeats=4,
        warmup=1,
        settle_s=0.02,
    )
    assert calls == ["fast", "slow"] * 5  # in turn, round after round
    assert clock.sleeps == [0.02] * 8  # a settling pause before each timed call, none in the warm-up
    assert result["fast"] == pytest.approx({"p50_ms": 1.0, "p90_ms": 1.0})  # the pauses are not timed
    assert result["slow"] == pytest.approx({"p50_ms": 10.0, "p90_ms": 10.0})


def test_measure_times_each_call_after_the_warm_up(monkeypatch):
    clock, durations = FakeClock(), iter([50, 50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    monkeypatch.setattr(timing, "time", clock)
    result = timing.measure(lambda: clock.work(next(durations)), repeats=10, warmup=2)
    assert result == pytest.approx({"p50_ms": 5.5, "p90_ms": 9.0, "min_ms": 1.0, "n": 10})


def test_op_profile_names_the_graphs_own_operators_with_their_kernel_times(tiny_model, sample_jpegs):
    import onnx

    from helpers.measure.timing import op_profile
    from helpers.runtime.decode import decode_image
    from helpers.runtime.model import Detector
    from helpers.runtime.preprocess import preprocess

    detector = Detector(tiny_model)
    tensor = preprocess(decode_image(sample_jpegs["10.jpg"]), detector.config)[0]
    profile = op_profile(tiny_model, {detector.input_name: tensor}, threads=1, repeats=3)
    graph_ops = {node.op_type for node in onnx.load(str(tiny_model)).graph.node}
    assert profile and set(profile) <= graph_ops | {"MemcpyToHost", "MemcpyFromHost"}
    assert all(ms >= 0 for ms in profile.values()) and sum(profile.values()) > 0
    assert list(profile.values()) == sorted(profile.values(), reverse=True)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("fpu sse2 avx2 avx512f avx512_vnni", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, with int8"),
        ("fpu sse2 avx2 avx_vnni", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, with int8"),
        ("fpu sse2 avx2 avx512f", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz, without int8"),
    ],
)
def test_the_cpu_is_named_with_whether_int8_dot_products_exist(flags, expected):
    """/proc/cpuinfo repeats a block per core; the first block names the CPU."""
    block = f"processor\t: {{}}\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\nflags\t\t: {flags}\n"
    cpuinfo = block.format(0) + "\n" + block.format(1).replace(flags, "fpu")
    assert timing.cpu_model(cpuinfo).startswith(expected)
