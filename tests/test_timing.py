"""The timer every benchmark figure comes from."""

import time

from helpers.measure.timing import interleaved, percentiles


def test_percentiles_take_the_median_and_the_sorted_sample_at_90_percent():
    assert percentiles([10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]) == {"p50_ms": 5.5, "p90_ms": 9.0}


def test_interleaved_times_each_contender_without_its_settling_pause():
    calls = []
    result = interleaved(
        {"fast": lambda: calls.append("fast"), "slow": lambda: (calls.append("slow"), time.sleep(0.01))},
        repeats=4,
        warmup=1,
        settle_s=0.02,
    )
    assert calls == ["fast", "slow"] * 5  # in turn, round after round
    assert result["fast"]["p90_ms"] < 5 <= 10 <= result["slow"]["p50_ms"] < 20


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
