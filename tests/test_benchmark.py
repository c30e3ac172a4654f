"""The benchmark's goals logic: a goal that cannot be judged says so and is never counted as met."""

import pytest

from helpers.data.dataset import Split
from helpers.paths import SAMPLE_DIR, split_file
from helpers.tools import benchmark
from helpers.train.models import BLOG_MODEL, LITE0_MODEL, MODEL_NAMES


def _accuracy(fp32_map, fp32_map50, int8_map, holdout=20, valid=2):
    return {
        "images": {"synthetic_holdout": holdout, "real_valid": valid},
        "fp32": {"map": fp32_map, "map_50": fp32_map50},
        "int8": {"map": int8_map, "map_50": fp32_map50},
    }


def _status(results, model=LITE0_MODEL):
    return {goal: (value, status) for goal, value, status in benchmark.goals(results)}[
        f"INT8 loses <= 1 mAP point ({model})"
    ]


def test_int8_accuracy_of_a_blind_model_is_not_measurable_never_met():
    value, status = _status({"int8_accuracy": {LITE0_MODEL: _accuracy(0.0, 0.0, 0.0)}})
    assert status == benchmark.NOT_MEASURABLE and "FP32 mAP@0.5 = 0.000" in value


def test_int8_accuracy_on_too_few_images_is_not_measurable():
    value, status = _status({"int8_accuracy": {LITE0_MODEL: _accuracy(0.5, 0.8, 0.5, holdout=0, valid=6)}})
    assert status == benchmark.NOT_MEASURABLE and "6 evaluation images" in value


@pytest.mark.parametrize("int8_map, expected", [(0.495, benchmark.MET), (0.45, benchmark.NOT_MET)])
def test_int8_accuracy_is_judged_on_real_figures(int8_map, expected):
    value, status = _status({"int8_accuracy": {LITE0_MODEL: _accuracy(0.5, 0.8, int8_map)}})
    assert status == expected and value == f"{100 * (0.5 - int8_map):.1f} points lost on 22 images"


def test_every_model_has_its_rows_and_missing_figures_are_not_measurable():
    rows = benchmark.goals({})
    for model in MODEL_NAMES:
        mine = [(goal, status) for goal, _, status in rows if f"({model})" in goal]
        assert len(mine) == 4 and {status for _, status in mine} == {benchmark.NOT_MEASURABLE}
    assert benchmark.MET not in {status for _, _, status in rows}


def test_speed_memory_and_size_goals_use_todays_targets():
    inference = {"torch": {"p50_ms": 300.0}, "ort_fp32": {"p50_ms": 150.0}, "ort_int8": {"p50_ms": 64.0}}
    results = {
        "inference": {f"{BLOG_MODEL} @ 2": inference},
        "cold_init": {
            BLOG_MODEL: {"cold_init_ms": 900.0, "peak_rss_mb": 420.0},
            LITE0_MODEL: {"cold_init_ms": 600.0, "peak_rss_mb": 200.0},
        },
        "by_size": {"0.3 MP": {"total": 50.0}, "12 MP": {"total": 70.0}},
        "zips": {"x86_64": {"zipped_bytes": 26 * 2**20}},
        "bytes_to_tensor": {"12 MP": {"ours": {"p50_ms": 80.0}, "opencv_albumentations": {"p50_ms": 84.0}}},
    }
    status = {goal: s for goal, _, s in benchmark.goals(results)}
    assert status[f"ORT >= 1.5x PyTorch eager, 2 threads ({BLOG_MODEL})"] == benchmark.MET  # 2.0x
    assert status[f"INT8 >= 2.5x FP32, 2 threads ({BLOG_MODEL})"] == benchmark.NOT_MET  # 2.34x
    assert status[f"cold init <= 1.0 s, under awslambdaric, CPython 3.12 ({BLOG_MODEL})"] == benchmark.MET
    assert status[f"cold init <= 0.5 s, under awslambdaric, CPython 3.12 ({LITE0_MODEL})"] == benchmark.NOT_MET
    assert status["12 MP request <= 1.5x the 0.3 MP request"] == benchmark.MET  # 1.4x
    assert status["zip <= 25 MiB (x86_64)"] == benchmark.NOT_MET
    assert status[f"peak RSS <= 400 MB ({BLOG_MODEL})"] == benchmark.NOT_MET
    assert status["bytes -> tensor >= 1.0x OpenCV imdecode + albumentations (12 MP)"] == benchmark.MET


def test_a_checkpoint_without_enough_unseen_images_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"")
    with pytest.raises(benchmark.BenchmarkRefused, match="no split record"):
        benchmark._models(tmp_path / "out", [run / "best.ckpt"], [])
    Split("sample", SAMPLE_DIR, ("10.jpg", "12.jpg", "14.jpg", "15.jpg"), ("11.jpg", "13.jpg")).write(split_file(run))
    with pytest.raises(benchmark.BenchmarkRefused, match="2 images never trained on; .* at least 20"):
        benchmark._models(tmp_path / "out", [run / "best.ckpt"], [])
