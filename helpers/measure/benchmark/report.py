"""The benchmark's results as BENCHMARKS.md's "benchmark" section (one function per part) and a plot.

Every function reads the typed Results (results.py) that `measure.run` returns, so a report can be
rendered again from a saved run (Results.from_json of results.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from helpers.measure.benchmark.results import Results
from helpers.measure.benchmark.serving_report import levers_section, memory_section
from helpers.measure.markdown import has_section, replace_section
from helpers.measure.targets import FP32_MAP50_FLOOR, MIN_EVALUATION_IMAGES, goals


def _table(header: str, rows: list[str]) -> str:
    return "\n".join([header, "|---" * (header.count("|") - 1) + "|", *rows])


def _introduction(results: Results) -> str:
    return "\n".join(
        [
            "# Benchmarks",
            "",
            f"Measured by `python -m helpers benchmark` on {results.environment}.",
            "Every ratio compares measurements made in the same run, interleaved, each timed call after a 50 ms",
            "pause in which the other contenders' thread pools go idle (as in a Lambda, which runs one of them).",
            "The host is shared and noisy: re-run for your own figures.",
            "",
            "Models: " + "; ".join(f"`{name}` {how}" for name, how in results.models.items()) + ".",
        ]
    )


def _goals(results: Results) -> str:
    return (
        "## Goals\n\n"
        f"INT8 accuracy is judged only on at least {MIN_EVALUATION_IMAGES} images the model never trained on and only "
        f"when FP32 reaches mAP@0.5 >= {FP32_MAP50_FLOOR} there; otherwise it is *not measurable*, never met.\n\n"
        + _table("| goal | measured | met |", [f"| {goal} | {value} | {met} |" for goal, value, met in goals(results)])
    )


def _bytes_to_tensor(results: Results) -> str:
    rows = [
        f"| {size} | {v.ours.p50_ms:.2f} | {v.opencv_albumentations.p50_ms:.2f} | {v.ratio:.2f}x |"
        for size, v in results.bytes_to_tensor.items()
    ]
    return "## Bytes -> model tensor (JPEG in, 1x3x384x384 float32 out)\n\n" + _table(
        "| input | ours (Pillow + exact C letterbox) p50 ms | OpenCV imdecode + albumentations p50 ms | ratio |", rows
    )


def _preprocessing(results: Results) -> str:
    rows = [f"| {name} | {v.p50_ms:.2f} | {v.p90_ms:.2f} |" for name, v in results.preprocessing.items()]
    return "## Preprocessing (decoded 499x666 image -> 1x3x384x384 float32)\n\n" + _table(
        "| path | p50 ms | p90 ms |", rows
    )


def _inference(results: Results) -> str:
    rows = [
        f"| {v.key} | {v.torch.p50_ms:.0f} / {v.torch.p90_ms:.0f} | {v.ort_fp32.p50_ms:.0f} / {v.ort_fp32.p90_ms:.0f} "
        f"| {v.ort_int8.p50_ms:.0f} / {v.ort_int8.p90_ms:.0f} | {v.ort_speedup:.2f}x "
        f"| {v.int8_speedup:.2f}x | {v.fp32_mb:.1f} | {v.int8_mb:.1f} |"
        for v in results.inference
    ]
    header = "| model @ threads | PyTorch p50/p90 ms | ORT FP32 p50/p90 ms | ORT INT8 p50/p90 ms | ORT/torch | INT8/FP32 | FP32 MB | INT8 MB |"
    return (
        "## Inference (one 384x384 input)\n\n" + _table(header, rows) + "\n\n"
        f"A 2048^3 fp32 MatMul in ONNX Runtime reached {results.gemm_peak_gflops_2_threads:.0f} GFLOP/s on 2 threads "
        "in the same run (the ceiling for FP32 convolutions here)."
    )


def _training_step(results: Results) -> str:
    steps = results.training_step
    rows = [f"| {name} | {v.p50_ms:.0f} | {v.p90_ms:.0f} |" for name, v in steps.items()]
    ratio = steps["torchvision's"].p50_ms / steps["ours"].p50_ms
    return (
        "## Training step (fasterrcnn_efficientnet_lite0_fpn, forward + backward, 2 real photos, 2 threads)\n\n"
        "RoIAlign's backward as torchvision's CPU kernel computes it, and as one sparse product "
        "(helpers/train/roi_align_grad.py; the same gradients, bit for bit), on the same batches in turn:\n\n"
        + _table("| RoIAlign backward | p50 ms | p90 ms |", rows)
        + f"\n\nA step with ours takes {1 / ratio:.2f}x the time ({ratio:.2f}x as fast)."
    )


def _int8_accuracy(results: Results) -> str:
    rows = []
    for name, how in results.models.items():
        acc = results.int8_accuracy.get(name)
        if acc is None:
            rows.append(f"| {name} | — | not measured: {how} | — |")
            continue
        rows.append(
            f"| {name} | {acc.image_count} test | {acc.fp32['map']:.3f} / {acc.fp32['map_50']:.3f} | "
            f"{acc.int8['map']:.3f} / {acc.int8['map_50']:.3f} |"
        )
    return (
        f"## INT8 accuracy (served pipeline, images never trained on; FP32 floor mAP@0.5 >= {FP32_MAP50_FLOOR})\n\n"
        + _table("| model | images | FP32 mAP / mAP@.5 | INT8 mAP / mAP@.5 |", rows)
    )


def _zip(results: Results) -> str:
    rows = [
        f"| {arch} | {z['zipped_bytes'] / 2**20:.1f} | {z['unzipped_bytes'] / 2**20:.1f} | "
        f"{z['untrimmed_unzipped_bytes'] / 2**20:.1f} | 50 MB zipped / 250 MB unzipped |"
        for arch, z in results.zips.items()
    ]
    skipped = "".join(f"\n\nNot measured in this run: the {what} ({why})." for what, why in results.skipped.items())
    return (
        "## The Lambda zip\n\n"
        + _table("| arch | zipped MiB | unzipped MiB | untrimmed unzipped MiB | quota |", rows)
        + skipped
    )


def _cold_init(results: Results) -> str:
    rows = [
        f"| {name} | {c.cold_init_ms:.0f} | {c.handler_init_ms:.0f} | "
        f"{c.first_request_ms:.0f} | {c.warm.p50_ms:.0f} / {c.warm.p90_ms:.0f} | {c.peak_rss_mb:.0f} |"
        for name, c in results.cold_init.items()
    ]
    header = "| model | cold init ms | of which handler init ms | first request ms | warm p50 / p90 ms | peak RSS MB |"
    return (
        "Cold start of the x86_64 zip under AWS's runtime client (awslambdaric, isolated CPython 3.12, a local "
        "Runtime API; median of 3; in AWS add the S3 model download). Cold init runs from the interpreter's start "
        "to its first request for an event (Lambda's Init Duration); the handler's own part (model and ONNX "
        "session) is its InitMs metric. Each model as it is served: FP32, except the trained model's shipped "
        f"file when the run decided one ({results.levers.get('shipped', 'none decided')}):\n\n" + _table(header, rows)
    )


def _by_size(results: Results) -> str:
    rows = []
    for size, t in results.by_size.items():
        compared = results.bytes_to_tensor.get(size)
        both = f"{compared.ours.p50_ms:.1f} / {compared.opencv_albumentations.p50_ms:.1f}" if compared else "-"
        rows.append(
            f"| {size} | {t.jpeg_mb:.2f} | {t.decode:.1f} | {t.preprocess:.1f} | {t.inference:.0f} | "
            f"{t.postprocess:.1f} | {t.total:.0f} | {both} |"
        )
    header = "| input | JPEG MB | decode | preprocess | inference | postprocess | total ms | bytes -> tensor: ours / OpenCV + albumentations ms |"
    return (
        f"## End-to-end handler latency by input size (in process, {results.levers.get('shipped', results.serving_model)})\n\n"
        "Decode (JPEG DCT scaling for photos at least twice the model size, see decode_for_model) and "
        "preprocess are the handler's own; the last column is what OpenCV imdecode + albumentations take "
        "for the same bytes -> tensor, measured interleaved with ours (table above).\n\n" + _table(header, rows)
    )


def markdown(results: Results, plot_name: str) -> str:
    """The whole benchmark section, its parts separated by blank lines, the plot last."""
    parts = (
        _introduction,
        _goals,
        _bytes_to_tensor,
        _preprocessing,
        _inference,
        _training_step,
        _int8_accuracy,
        _zip,
        _cold_init,
    )
    return "\n\n".join(
        [
            *(part(results) for part in parts),
            levers_section(results),
            _by_size(results),
            memory_section(results),
            f"![latency]({plot_name})",
        ]
    )


def write_markdown(results: Results, path: Path, plot_path: Path) -> None:
    """The benchmark's section of `path` (first in a new file); the rest of the file is left as it is."""
    replace_section(path, "benchmark", markdown(results, plot_path.name), at_start=True)


#: README.md's serving table, written by the benchmark between this section's markers.
README_SECTION = "benchmark:serving"


def serving_table(results: Results) -> str:
    """README's serving figures: where they were measured, then the goal table (goal, figure, met)."""
    models = "; ".join(f"`{name}` {how}" for name, how in results.models.items())
    return (
        f"Measured by `python -m helpers benchmark` on {results.environment} (models: {models}); "
        "every figure and more in BENCHMARKS.md.\n\n"
        + _table("| goal | measured | met |", [f"| {goal} | {value} | {met} |" for goal, value, met in goals(results)])
    )


def write_readme(results: Results, readme: Path) -> bool:
    """Replace README's serving table (between `<!-- benchmark:serving:start -->` and `:end -->`);
    False, the file untouched, when it has no such markers."""
    if not has_section(readme, README_SECTION):
        return False
    replace_section(readme, README_SECTION, serving_table(results))
    return True


def plot(results: Results, path: Path) -> None:
    """Inference p50 by model and threads; request latency by photo size, ours and with OpenCV +
    albumentations in place of our bytes -> tensor. Drawn on a Figure, so no pyplot backend is set."""
    fig = Figure(figsize=(10, 3.5), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    rows = results.inference
    x = np.arange(len(rows))
    for offset, name in ((-0.25, "torch"), (0, "ort_fp32"), (0.25, "ort_int8")):
        ax1.bar(x + offset, [getattr(row, name).p50_ms for row in rows], width=0.25, label=name)
    short = {
        "retinanet_resnet50_fpn": "RetinaNet",
        "fasterrcnn_mobilenet_v3_large_320_fpn": "MobileNetV3",
        "fasterrcnn_efficientnet_lite0_fpn": "Lite0",
    }
    labels = [f"{short.get(row.model, row.model)}\n{row.threads} thread(s)" for row in rows]
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set_ylabel("p50 ms"), ax1.set_title("inference, 384x384"), ax1.legend(fontsize=7)
    # Cost growth with the photo's size: the handler as it is, and the same request had its bytes ->
    # tensor been OpenCV imdecode + albumentations (the request minus its own decode and preprocess,
    # plus their measured bytes -> tensor; the rest of the request, base64 and JSON included, is alike).
    sizes = [s for s in results.by_size if s in results.bytes_to_tensor]
    megapixels = [float(s.split()[0]) for s in sizes]
    requests = [results.by_size[s] for s in sizes]
    ours = [r.total for r in requests]
    theirs = [
        r.total - r.decode - r.preprocess + results.bytes_to_tensor[s].opencv_albumentations.p50_ms
        for s, r in zip(sizes, requests)
    ]
    ax2.plot(megapixels, ours, "o-", label="handler (Pillow, DCT-scaled decode, C letterbox)")
    ax2.plot(megapixels, theirs, "s--", label="with OpenCV imdecode + albumentations")
    ax2.set_xlabel("JPEG megapixels"), ax2.set_ylabel("p50 ms per request")
    ax2.set_title("end-to-end latency by input size"), ax2.set_ylim(bottom=0), ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
