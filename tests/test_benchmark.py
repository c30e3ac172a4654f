"""The benchmark's goals logic: a goal that cannot be judged says so and is never counted as met;
its report: every measured part rendered, in its own section of BENCHMARKS.md."""

import shutil

import pytest

from helpers.data.dataset import Split
from helpers.measure import targets as benchmark
from helpers.measure.benchmark.measure import BenchmarkRefused, _models, preflight
from helpers.measure.benchmark.report import markdown, plot, write_markdown
from helpers.measure.benchmark.results import Results
from helpers.measure.markdown import replace_section
from helpers.paths import SAMPLE_DIR, split_file
from helpers.train.models import BLOG_MODEL, LITE0_MODEL, MODEL_NAMES


def _accuracy(fp32_map, fp32_map50, int8_map, unseen=28):
    return {
        "images": {"test": unseen},
        "fp32": {"map": fp32_map, "map_50": fp32_map50},
        "int8": {"map": int8_map, "map_50": fp32_map50},
    }


def _status(results, model=LITE0_MODEL):
    return {goal: (value, status) for goal, value, status in benchmark.goals(Results.from_json(results))}[
        f"INT8 loses <= 1 mAP point ({model})"
    ]


def test_int8_accuracy_of_a_blind_model_is_not_measurable_never_met():
    value, status = _status({"int8_accuracy": {LITE0_MODEL: _accuracy(0.0, 0.0, 0.0)}})
    assert status == benchmark.NOT_MEASURABLE and "FP32 mAP@0.5 = 0.000" in value


def test_int8_accuracy_on_too_few_images_is_not_measurable():
    value, status = _status({"int8_accuracy": {LITE0_MODEL: _accuracy(0.5, 0.8, 0.5, unseen=6)}})
    assert status == benchmark.NOT_MEASURABLE and "6 evaluation images" in value


@pytest.mark.parametrize("int8_map, expected", [(0.495, benchmark.MET), (0.45, benchmark.NOT_MET)])
def test_int8_accuracy_is_judged_on_real_figures(int8_map, expected):
    value, status = _status({"int8_accuracy": {LITE0_MODEL: _accuracy(0.5, 0.8, int8_map)}})
    assert status == expected and value == f"{100 * (0.5 - int8_map):.1f} points lost on 28 images"


def test_every_model_has_its_rows_and_missing_figures_are_not_measurable():
    rows = benchmark.goals(Results())
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
    status = {goal: s for goal, _, s in benchmark.goals(Results.from_json(results))}
    assert status[f"ORT >= 1.5x PyTorch eager, 2 threads ({BLOG_MODEL})"] == benchmark.MET  # 2.0x
    assert status[f"INT8 >= 2.5x FP32, 2 threads ({BLOG_MODEL})"] == benchmark.NOT_MET  # 2.34x
    assert status[f"cold init <= 1.0 s, under awslambdaric, CPython 3.12 ({BLOG_MODEL})"] == benchmark.MET
    assert status[f"cold init <= 0.5 s, under awslambdaric, CPython 3.12 ({LITE0_MODEL})"] == benchmark.NOT_MET
    assert status["12 MP request <= 1.5x the 0.3 MP request"] == benchmark.MET  # 1.4x
    assert status["zip <= 25 MiB (x86_64)"] == benchmark.NOT_MET
    assert status[f"peak RSS <= 400 MB ({BLOG_MODEL})"] == benchmark.NOT_MET
    assert status["bytes -> tensor >= 1.0x OpenCV imdecode + albumentations (12 MP)"] == benchmark.MET


def test_a_checkpoint_without_enough_test_images_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(b"")
    with pytest.raises(BenchmarkRefused, match="no split record"):
        _models(tmp_path / "out", [run / "best.ckpt"], [])
    Split("sample", SAMPLE_DIR, ("10.jpg", "12.jpg", "14.jpg"), ("11.jpg",), ("13.jpg", "15.jpg")).write(
        split_file(run)
    )
    with pytest.raises(BenchmarkRefused, match="2 images never trained on; .* at least 20"):
        _models(tmp_path / "out", [run / "best.ckpt"], [])


def _results():
    """A whole run's results as results.json keeps them (Results.to_json), for one trained model."""
    timing = {"p50_ms": 40.0, "p90_ms": 44.0}
    sizes = ("0.3 MP", "1 MP", "4 MP", "12 MP")
    return {
        "environment": "x86_64, 2 CPUs",
        "models": {m: "trained (here)" if m == LITE0_MODEL else "random weights" for m in MODEL_NAMES},
        "preprocessing": {"ours (C kernel)": timing, "albumentations": timing},
        "bytes_to_tensor": {s: {"ours": timing, "opencv_albumentations": timing} for s in ("499x666 sample", *sizes)},
        "inference": {
            f"{m} @ {t}": {"torch": timing, "ort_fp32": timing, "ort_int8": timing, "fp32_mb": 20.0, "int8_mb": 6.0}
            for m in MODEL_NAMES
            for t in (1, 2)
        },
        "gemm_peak_gflops_2_threads": 250.0,
        "training_step": {"torchvision's": {"p50_ms": 400.0, "p90_ms": 420.0}, "ours": timing},
        "int8_accuracy": {LITE0_MODEL: _accuracy(0.5, 0.8, 0.495)},
        "zips": {
            a: {"zipped_bytes": 2**24, "unzipped_bytes": 2**26, "untrimmed_unzipped_bytes": 2**27}
            for a in ("x86_64", "arm64")
        },
        "cold_init": {
            m: {
                "cold_init_ms": 400.0,
                "handler_init_ms": 200.0,
                "first_request_ms": 60.0,
                "warm": timing,
                "peak_rss_mb": 300.0,
            }
            for m in MODEL_NAMES
        },
        "serving_model": LITE0_MODEL,
        "by_size": {
            s: {"jpeg_mb": 1.0, "decode": 3.0, "preprocess": 1.0, "inference": 37.0, "postprocess": 0.3, "total": 42.0}
            for s in sizes
        },
        "levers": _levers(),
        "int8_gemm_peak_gops_2_threads": 600.0,
        "memory": [
            {
                "memory_mb": mb,
                "vcpus": mb / 1769,
                "quota_cpus": min(2, mb / 1769),
                "first_ms": 90.0,
                "p50_ms": 20 * 1769 / min(mb, 3538),
                "p90_ms": 24 * 1769 / min(mb, 3538),
                "usd_per_million": 1.0 + mb / 1e4,
                "peak_rss_mb": 140.0,
                "fits": mb > 140,
            }
            for mb in (128, 512, 1024, 1769, 3538)
        ],
    }


def _levers(shipped_ms=20.0, shipped_map_50=0.88):
    """The levers section as measure_levers returns it: torchvision's FP32 graph at 0.89 [0.83, 0.96]."""
    from helpers.measure.benchmark.levers import LEVERS

    def row(name, ms, map_50, int8):
        figure = {"estimate": map_50, "low": map_50 - 0.06, "high": map_50 + 0.07}
        return {
            "lever": name,
            "end_to_end": {"p50_ms": ms, "p90_ms": ms + 2},
            "inference": {"p50_ms": ms - 4, "p90_ms": ms - 2},
            "map_50": figure,
            "map": figure,
            "gflop": 4.5,
            "int8": int8,
        }

    rows = [row(name, 30.0, 0.89, stride is not None) for name, _, stride in LEVERS]
    rows[4] = row(LEVERS[4][0], shipped_ms, shipped_map_50, True)
    return {
        "rows": rows,
        "images": 31,
        "shipped": "lever4_int8.onnx",
        "ship_reason": "INT8 qualifies",
        "shipped_lever": LEVERS[4][0],
    }


@pytest.mark.parametrize(
    ("ms", "map_50", "met"),
    [(20.0, 0.88, (True, True)), (25.1, 0.88, (False, True)), (20.0, 0.82, (True, False))],
)
def test_the_shipped_model_is_judged_by_its_speed_and_todays_interval(ms, map_50, met):
    results = Results.from_json({**_results(), "levers": _levers(ms, map_50)})
    status = {goal: verdict for goal, _, verdict in benchmark.goals(results)}
    speed = status["shipped model end to end <= 25 ms p50 (0.3 MP, 2 threads)"]
    accuracy = status["shipped test mAP@0.5 within torchvision's graph, FP32's interval"]
    assert (speed == benchmark.MET, accuracy == benchmark.MET) == met
    assert status["memory table measured at >= 10 sizes"] == benchmark.NOT_MET  # 5 sizes


def test_the_report_has_every_part_and_the_goal_table_is_goals():
    results = _results()
    text = markdown(Results.from_json(results), "benchmarks.png")
    headings = [line.split(" (")[0] for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        "# Benchmarks",
        "## Goals",
        "## Bytes -> model tensor",
        "## Preprocessing",
        "## Inference",
        "## Training step",
        "## INT8 accuracy",
        "## The Lambda zip",
        "## Serving levers",
        "## End-to-end handler latency by input size",
        "## Latency and cost by memory size",
    ]
    goal_table = text.split("| goal | measured | met |\n|---|---|---|\n", 1)[1].split("\n\n", 1)[0]
    assert goal_table.splitlines() == [
        f"| {goal} | {value} | {met} |" for goal, value, met in benchmark.goals(Results.from_json(results))
    ]
    rows = text.splitlines()
    for part in ("inference", "by_size", "zips", "cold_init", "models"):  # one table row per measured key
        assert all(any(line.startswith(f"| {key} |") for line in rows) for key in results[part]), part
    assert rows[-1] == "![latency](benchmarks.png)"


def test_each_tool_rewrites_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    results = _results()
    replace_section(path, "training", "## Training\n\n| a |\n|---|\n| first |")
    path.write_text(path.read_text() + "\n## Written by hand\n\nkept as it is\n")
    write_markdown(Results.from_json(results), path, tmp_path / "benchmarks.png")
    first = path.read_text()
    assert first.startswith("<!-- benchmark:start -->\n# Benchmarks\n")  # a new benchmark section comes first
    assert first.endswith("<!-- training:end -->\n\n## Written by hand\n\nkept as it is\n")
    assert "| first |\n\n<!-- training:end -->" in first  # a blank line ends the table before the marker
    results["environment"] = "another machine"
    write_markdown(Results.from_json(results), path, tmp_path / "benchmarks.png")
    replace_section(path, "training", "## Training\n\n| a |\n|---|\n| second |")
    second = path.read_text()
    assert second == first.replace("x86_64, 2 CPUs", "another machine").replace("| first |", "| second |")


def test_the_plot_is_drawn_from_the_results(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from PIL import Image

    results = _results()
    for i, figures in enumerate(results["inference"].values()):  # distinct heights, to see each bar's source
        for j, name in enumerate(("torch", "ort_fp32", "ort_int8")):
            figures[name] = {"p50_ms": 10.0 * i + j + 1, "p90_ms": 99.0}
    for i, size in enumerate(("0.3 MP", "1 MP", "4 MP", "12 MP")):
        results["by_size"][size]["total"] = 40.0 + 10 * i
        results["bytes_to_tensor"][size]["opencv_albumentations"] = {"p50_ms": 5.0 + i, "p90_ms": 99.0}
    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (drawn.append(fig), save(fig, *a, **k)))
    plot(Results.from_json(results), tmp_path / "benchmarks.png")
    with Image.open(tmp_path / "benchmarks.png") as image:
        assert (image.format, image.size) == ("PNG", (1000, 350))
    (figure,) = drawn
    bars, lines = figure.axes
    heights = [[bar.get_height() for bar in container] for container in bars.containers]
    assert heights == [
        [f[name]["p50_ms"] for f in results["inference"].values()] for name in ("torch", "ort_fp32", "ort_int8")
    ]
    ours, theirs = (list(line.get_ydata()) for line in lines.get_lines())
    assert [list(line.get_xdata()) for line in lines.get_lines()] == [[0.3, 1.0, 4.0, 12.0]] * 2
    assert ours == [40.0, 50.0, 60.0, 70.0]
    assert theirs == [
        40.0 - 3.0 - 1.0 + 5.0,
        50.0 - 4.0 + 6.0,
        60.0 - 4.0 + 7.0,
        70.0 - 4.0 + 8.0,
    ]  # minus decode and preprocess


def test_without_the_cross_compiler_the_arm64_zip_is_skipped_up_front_and_the_report_says_so(monkeypatch, tmp_path):
    """Checked before any work starts (it once failed with a traceback after 148 s of measuring)."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("gcc", "cc", "x86_64-linux-gnu-gcc"):  # this machine's compilers, not the aarch64 one
        if found := shutil.which(tool):
            (bare / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bare))
    skipped = preflight()
    assert list(skipped) == ["arm64 zip"] and "aarch64-linux-gnu-gcc" in skipped["arm64 zip"]
    results = _results()
    del results["zips"]["arm64"]
    text = markdown(Results.from_json({**results, "skipped": skipped}), "benchmarks.png")
    assert "Not measured in this run: the arm64 zip (no C compiler for arm64" in text


def test_the_readme_serving_table_is_written_between_its_markers_only(tmp_path):
    """The benchmark writes README's serving figures (not copied by hand); without the markers the
    README is left as it is."""
    from helpers.measure.benchmark.report import serving_table, write_readme

    results = _results()
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nintro\n\n", "\n\n## Next\n\ntext\n"
    readme.write_text(before + "<!-- benchmark:serving:start -->\nold table\n<!-- benchmark:serving:end -->" + after)
    assert write_readme(Results.from_json(results), readme)
    text = readme.read_text()
    assert text.startswith(before) and text.endswith(after) and "old table" not in text
    table = text.split("<!-- benchmark:serving:start -->\n")[1].split("<!-- benchmark:serving:end -->")[0]
    assert table.strip() == serving_table(Results.from_json(results)).strip()
    assert [f"| {goal} | {value} | {met} |" for goal, value, met in benchmark.goals(Results.from_json(results))] == [
        line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| goal ")
    ]
    assert "x86_64, 2 CPUs" in table
    unmarked = tmp_path / "other.md"
    unmarked.write_text(before)
    assert not write_readme(Results.from_json(results), unmarked) and unmarked.read_text() == before


def test_results_are_typed_once_and_results_json_keeps_its_layout():
    """Read by attribute ("name @ threads" is built in one place), written back as it was read."""
    data = _results()
    results = Results.from_json(data)
    assert results.to_json() == {**data, "skipped": {}}
    row = results.inference_of(LITE0_MODEL, 2)
    assert (row.key, row.ort_speedup, row.int8_speedup) == (f"{LITE0_MODEL} @ 2", 1.0, 1.0)
    assert results.inference_of(LITE0_MODEL, 4) is None
    assert results.int8_accuracy[LITE0_MODEL].image_count == 28
    assert results.by_size["12 MP"].total == 42.0 and results.cold_init[BLOG_MODEL].warm.p50_ms == 40.0
