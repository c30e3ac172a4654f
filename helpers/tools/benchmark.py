"""Benchmarks, measured side by side in one run; `python -m helpers benchmark` writes BENCHMARKS.md.

Ratios are taken between measurements made in the same process, interleaved, on the same inputs, so a
noisy host moves both sides. Nothing here is a test: it prints figures and states the goals.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.runtime.config import PREPROCESS
from helpers.runtime.contract import ModelContract
from helpers.runtime.preprocess import decode_for_model, decode_image, kernel, preprocess, preprocess_numpy
from helpers.tools import blog
from helpers.tools.timing import SETTLE_S, interleaved, measure, percentiles


def preprocessing_comparison(image: np.ndarray, repeats: int = 30) -> dict[str, dict]:
    """decoded RGB -> model input, interleaved: ours (C kernel, and the NumPy path used without it),
    albumentations 2.0.8, the blog's float64."""
    from helpers.train.transforms import valid_transform

    albu = valid_transform(PREPROCESS)
    pil = Image.fromarray(image)

    def albumentations_path():
        out = albu(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"]
        return np.ascontiguousarray(out.transpose(2, 0, 1))[None]

    runs = {
        "ours (C kernel)": lambda: preprocess(image),
        "ours without the kernel (NumPy)": lambda: preprocess_numpy(image),
        "albumentations": albumentations_path,
        "blog": lambda: blog.preprocess(pil),
    }
    return interleaved(runs, repeats, warmup=2)


def synthetic_photo(megapixels: float) -> bytes:
    """A JPEG of about `megapixels` made by tiling a real sample image (4:3 landscape)."""
    from helpers.paths import SAMPLE_DIR

    source = Image.open(SAMPLE_DIR / "images" / "10.jpg").convert("RGB")
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    height = int(width * 3 / 4)
    canvas = Image.new("RGB", (width, height))
    for x in range(0, width, source.width):
        for y in range(0, height, source.height):
            canvas.paste(source, (x, y))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# ---- inference -----------------------------------------------------------------------------------


def inference_comparison(
    module, fp32_path: Path, int8_path: Path, tensor: np.ndarray, threads: int, repeats: int
) -> dict:
    """PyTorch eager vs ONNX Runtime FP32 vs INT8 on one input at `threads` threads, interleaved, each
    after the others' thread pools have gone idle (see helpers.tools.timing.interleaved)."""
    import torch

    from helpers.runtime.model import Detector

    torch.set_num_threads(threads)
    fp32_detector = Detector(fp32_path, threads=threads)
    fp32, int8 = fp32_detector.session, Detector(int8_path, threads=threads).session
    image = torch.from_numpy(tensor[0])
    feeds = {fp32_detector.input_name: tensor}
    runs = {
        "torch": lambda: module([image]),
        "ort_fp32": lambda: fp32.run(None, feeds),
        "ort_int8": lambda: int8.run(None, feeds),
    }
    with torch.no_grad():
        return interleaved(runs, repeats, warmup=2)


def gemm_peak_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """ONNX Runtime fp32 MatMul n^3 throughput: the ceiling for a conv-heavy fp32 model here."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"a": np.random.rand(n, n).astype(np.float32), "b": np.random.rand(n, n).astype(np.float32)}
    best = measure(lambda: session.run(None, feeds), repeats)["min_ms"]
    return 2 * n**3 / (best / 1e3) / 1e9


# ---- the whole benchmark ---------------------------------------------------------------------------

LAMBDA_PRICE = {  # AWS list prices, us-east-1 on-demand, unchanged since Dec 2020 as far as we know;
    # this machine is offline and cannot re-check them: verify on aws.amazon.com/lambda/pricing
    "date": "list prices as of Dec 2020 (not re-checked offline)",
    "x86_64_gb_second_usd": 0.0000166667,
    "arm64_gb_second_usd": 0.0000133334,
    "per_million_requests_usd": 0.20,
}
VCPU_MB = 1769  # Lambda allocates CPU in proportion to memory: 1 vCPU at 1,769 MB


def estimated_cost_per_million(
    latency_1thread_ms: float, latency_2threads_ms: float, memory_mb: int, arch: str = "x86_64"
) -> float:
    """Assumption: below 1,769 MB latency grows in proportion to the missing CPU share; from 1,769 MB the
    1-thread latency applies, from 3,538 MB (2 vCPU) the 2-thread latency."""
    if memory_mb >= 2 * VCPU_MB:
        latency = latency_2threads_ms
    elif memory_mb >= VCPU_MB:
        latency = latency_1thread_ms
    else:
        latency = latency_1thread_ms * VCPU_MB / memory_mb
    billed_seconds = np.ceil(latency) / 1e3  # billed per 1 ms
    compute = billed_seconds * memory_mb / 1024 * LAMBDA_PRICE[f"{arch}_gb_second_usd"]
    return 1e6 * compute + LAMBDA_PRICE["per_million_requests_usd"]


def _env_description() -> str:
    import onnxruntime
    import torch

    from helpers.build import native

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, "
        f"letterbox kernel {'loaded' if kernel() else 'NOT built'} ({native.compiler_version(native.host_arch())})"
    )


#: INT8 accuracy is judged only on at least this many images the model never trained on, and only
#: when the FP32 model sees something there: below the floor, "INT8 loses <= 1 point" is vacuous.
MIN_EVALUATION_IMAGES = 20
FP32_MAP50_FLOOR = 0.3


class BenchmarkRefused(ValueError):
    """A checkpoint the benchmark cannot judge fairly (no split record, too few evaluation images)."""


def bytes_to_tensor_comparison(jpeg: bytes, repeats: int) -> dict[str, dict]:
    """JPEG bytes -> model input, ours (Pillow decode + exact C letterbox) vs what a user would pick
    with the training libraries (OpenCV imdecode + albumentations), interleaved."""
    import cv2

    from helpers.train.transforms import valid_transform

    albu = valid_transform(PREPROCESS)
    buffer = np.frombuffer(jpeg, np.uint8)

    def opencv_albumentations():
        image = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out = albu(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"]
        return np.ascontiguousarray(out.transpose(2, 0, 1))[None]

    runs = {
        "ours": lambda: preprocess(decode_for_model(jpeg, PREPROCESS.image_size, max_pixels=1 << 30)),
        "opencv_albumentations": opencv_albumentations,
    }
    return interleaved(runs, repeats, warmup=1)


def _models(out_dir: Path, checkpoints: list[Path], calibration_sample: list[np.ndarray]) -> dict[str, dict]:
    """Every model the project ships: trained from a given checkpoint, else random weights (said so)."""
    import torch

    from helpers.data import dataset as fridge_data
    from helpers.export.onnx_export import export_checkpoint, export_onnx
    from helpers.export.quantize import calibration_inputs, quantize_int8
    from helpers.paths import shown, split_file
    from helpers.runtime.classmap import ClassMap
    from helpers.runtime.config import FRIDGE_CLASSES
    from helpers.train.models import MODEL_NAMES, build_detector
    from helpers.train.run import load_checkpoint

    models = {}
    for checkpoint in checkpoints:
        split_path = split_file(Path(checkpoint).parent)
        if not split_path.is_file():
            raise BenchmarkRefused(f"{checkpoint}: no split record next to it (train it with this version)")
        split = fridge_data.Split.read(split_path)
        unseen = len(split.evaluation())
        if unseen < MIN_EVALUATION_IMAGES:
            raise BenchmarkRefused(
                f"{checkpoint}: {unseen} images never trained on; the INT8 accuracy "
                f"goal needs at least {MIN_EVALUATION_IMAGES}"
            )
        module = load_checkpoint(checkpoint)
        name = module.hparams.model_name
        fp32 = export_checkpoint(checkpoint, out_dir / f"{name}.onnx")
        calibration = calibration_inputs(split, module.preprocess, limit=8)
        models[name] = {
            "module": module.model.eval(),
            "fp32": fp32,
            "trained": f"trained ({shown(Path(checkpoint).parent)})",
            "split": split,
            "int8": quantize_int8(fp32, out_dir / f"{name}_int8.onnx", calibration),
        }
    for name in MODEL_NAMES:
        if name in models:
            continue
        torch.manual_seed(0)
        model, _ = build_detector(name, len(FRIDGE_CLASSES) + 1, PREPROCESS.image_size, weights="none")
        model.eval()
        contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS)
        fp32 = export_onnx(model, out_dir / f"{name}_random.onnx", contract, name, "none (random init)")
        models[name] = {
            "module": model,
            "fp32": fp32,
            "trained": None,
            "split": None,
            "int8": quantize_int8(fp32, out_dir / f"{name}_random_int8.onnx", calibration_sample),
        }
    return models


def run(out_dir: Path, checkpoints: list[Path], repeats: int) -> dict:
    from helpers.build import native
    from helpers.build.package import build
    from helpers.data import dataset as fridge_data
    from helpers.evaluate.metrics import evaluate_detector
    from helpers.runtime import handler as lambda_handler
    from helpers.runtime.model import Detector
    from helpers.tools.lambda_local import invoke_zip
    from helpers.train.models import LITE0_MODEL

    native.build_in_place()  # "ours" is what the zip runs: the C letterbox
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"environment": _env_description()}
    records = fridge_data.load_sample()
    image_bytes = records[0].image_path.read_bytes()
    image = decode_image(image_bytes)
    tensor, _ = preprocess(image)

    print("preprocessing ...", flush=True)
    results["preprocessing"] = preprocessing_comparison(image, repeats=max(30, repeats))
    photos = {megapixels: synthetic_photo(megapixels) for megapixels in SIZES_MP}  # also the end-to-end table's
    results["bytes_to_tensor"] = {"499x666 sample": bytes_to_tensor_comparison(image_bytes, max(30, repeats))}
    for megapixels, jpeg in photos.items():
        rounds = max(30, repeats) if megapixels < 4 else max(5, repeats // 2)
        results["bytes_to_tensor"][f"{megapixels} MP"] = bytes_to_tensor_comparison(jpeg, rounds)

    print("models ...", flush=True)
    sample_calibration = [preprocess(decode_for_model(r.image_path.read_bytes()))[0] for r in records]
    models = _models(out_dir, checkpoints, sample_calibration)
    results["models"] = {
        name: m["trained"] or "random weights: no trained checkpoint given" for name, m in models.items()
    }

    results["inference"] = {}
    for name, m in models.items():
        for threads in (1, 2):
            print(f"inference {name} @ {threads} thread(s) ...", flush=True)
            results["inference"][f"{name} @ {threads}"] = {
                **inference_comparison(m["module"], m["fp32"], m["int8"], tensor, threads, repeats),
                "fp32_mb": m["fp32"].stat().st_size / 1e6,
                "int8_mb": m["int8"].stat().st_size / 1e6,
            }
    results["gemm_peak_gflops_2_threads"] = gemm_peak_gflops(2)

    results["int8_accuracy"] = {}
    for name, m in models.items():
        if m["split"] is None:
            continue
        print(f"INT8 accuracy {name} ...", flush=True)
        holdout, valid = m["split"].holdout(), m["split"].real("valid")
        results["int8_accuracy"][name] = {
            "images": {"synthetic_holdout": len(holdout), "real_valid": len(valid)},
            "fp32": evaluate_detector(Detector(m["fp32"]), holdout + valid),
            "int8": evaluate_detector(Detector(m["int8"]), holdout + valid),
        }

    print("zips ...", flush=True)
    results["zips"] = {}
    for arch in ("x86_64", "arm64"):
        report = build(arch, "3.12", out_dir=out_dir / "dist")
        results["zips"][arch] = {
            k: report[k] for k in ("zipped_bytes", "unzipped_bytes", "untrimmed_unzipped_bytes", "sha256")
        }
    results["cold_init"] = {}
    for name, m in models.items():
        print(f"cold init of the zip under the runtime client, {name} ...", flush=True)
        colds = [
            invoke_zip(
                out_dir / "dist" / "lambda-x86_64.zip",
                [{"image": base64.b64encode(image_bytes).decode()}] * 10,
                {"MODEL_PATH": str(m["fp32"]), "LOG_LEVEL": "WARNING"},
            )
            for _ in range(3)
        ]
        results["cold_init"][name] = {
            "cold_init_ms": float(np.median([r["cold_init_ms"] for r in colds])),
            "handler_init_ms": float(np.median([r["handler_init_ms"] for r in colds])),
            "first_request_ms": float(np.median([r["latencies_ms"][0] for r in colds])),
            "warm": percentiles([x for r in colds for x in r["latencies_ms"][2:]]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in colds),
        }

    serving = next((n for n, m in models.items() if m["trained"]), LITE0_MODEL)
    print(f"latency by image size ({serving}) ...", flush=True)
    results["serving_model"] = serving
    lambda_handler.init(
        {"MODEL_PATH": str(models[serving]["fp32"]), "LOG_LEVEL": "WARNING", "MAX_IMAGE_BYTES": str(50 << 20)}
    )
    results["by_size"] = {}
    for megapixels, jpeg in photos.items():
        event = {"image": base64.b64encode(jpeg).decode()}
        timings = []
        for _ in range(max(5, repeats // 4)):
            # Requests reach a Lambda apart; back to back, each one's decode would run beside the
            # previous inference's still-spinning ONNX Runtime workers (see helpers.tools.timing.interleaved).
            time.sleep(SETTLE_S)
            timings.append(lambda_handler.handler(event, None)["timings_ms"])
        results["by_size"][f"{megapixels} MP"] = {
            "jpeg_mb": len(jpeg) / 1e6,
            **{k: float(np.median([t[k] for t in timings])) for k in timings[0]},
        }
    return results


MET, NOT_MET, NOT_MEASURABLE = "yes", "**no**", "not measurable"
SIZES_MP = (0.3, 1, 4, 12)


def _ratio_goal(name: str, ratio: float | None, target: float) -> tuple[str, str, str]:
    if ratio is None:
        return name, "not run", NOT_MEASURABLE
    return name, f"{ratio:.2f}x", MET if ratio >= target else NOT_MET


def int8_accuracy_goal(model: str, accuracy: dict | None) -> tuple[str, str, str]:
    """INT8 loses <= 1 mAP point, judged only on >= MIN_EVALUATION_IMAGES unseen images and only when the
    FP32 model reaches FP32_MAP50_FLOOR there: 0 vs 0 is not "no loss", it is nothing measured."""
    name = f"INT8 loses <= 1 mAP point ({model})"
    if accuracy is None:
        return name, "no trained checkpoint given", NOT_MEASURABLE
    images = sum(accuracy["images"].values())
    if images < MIN_EVALUATION_IMAGES:
        return name, f"{images} evaluation images (< {MIN_EVALUATION_IMAGES})", NOT_MEASURABLE
    fp32_map50 = accuracy["fp32"]["map_50"]
    if fp32_map50 < FP32_MAP50_FLOOR:
        return name, f"FP32 mAP@0.5 = {fp32_map50:.3f} (< {FP32_MAP50_FLOOR})", NOT_MEASURABLE
    lost = 100 * (accuracy["fp32"]["map"] - accuracy["int8"]["map"])
    figure = f"{lost:.1f} points lost" if lost >= 0 else f"{-lost:.1f} points gained"
    return name, f"{figure} on {images} images", MET if lost <= 1.0 else NOT_MET


def goals(results: dict) -> list[tuple[str, str, str]]:
    """(goal, the run's figure, met / not met / not measurable), today's targets."""
    from helpers.train.models import BLOG_MODEL, MODEL_NAMES

    rows = []
    for size, figures in results.get("bytes_to_tensor", {}).items():
        ratio = figures["opencv_albumentations"]["p50_ms"] / figures["ours"]["p50_ms"]
        rows.append(_ratio_goal(f"bytes -> tensor >= 1.0x OpenCV imdecode + albumentations ({size})", ratio, 1.0))
    for model in MODEL_NAMES:
        inference = results.get("inference", {}).get(f"{model} @ 2")
        ort = inference and inference["torch"]["p50_ms"] / inference["ort_fp32"]["p50_ms"]
        int8 = inference and inference["ort_fp32"]["p50_ms"] / inference["ort_int8"]["p50_ms"]
        rows.append(_ratio_goal(f"ORT >= 1.5x PyTorch eager, 2 threads ({model})", ort, 1.5))
        rows.append(_ratio_goal(f"INT8 >= 2.5x FP32, 2 threads ({model})", int8, 2.5))
        rows.append(int8_accuracy_goal(model, results.get("int8_accuracy", {}).get(model)))
        limit_s = 1.0 if model == BLOG_MODEL else 0.5
        cold = results.get("cold_init", {}).get(model)
        name = f"cold init <= {limit_s} s, under awslambdaric, CPython 3.12 ({model})"
        rows.append(
            (name, f"{cold['cold_init_ms'] / 1e3:.2f} s", MET if cold["cold_init_ms"] <= limit_s * 1e3 else NOT_MET)
            if cold
            else (name, "not run", NOT_MEASURABLE)
        )
    by_size = results.get("by_size", {})
    if "12 MP" in by_size and "0.3 MP" in by_size:
        ratio = by_size["12 MP"]["total"] / by_size["0.3 MP"]["total"]
        rows.append(("12 MP request <= 1.5x the 0.3 MP request", f"{ratio:.2f}x", MET if ratio <= 1.5 else NOT_MET))
    zipped = results.get("zips", {}).get("x86_64", {}).get("zipped_bytes")
    if zipped is not None:
        rows.append(("zip <= 25 MiB (x86_64)", f"{zipped / 2**20:.1f} MiB", MET if zipped <= 25 * 2**20 else NOT_MET))
    retina = results.get("cold_init", {}).get(BLOG_MODEL)
    if retina:
        rows.append(
            (
                f"peak RSS <= 400 MB ({BLOG_MODEL})",
                f"{retina['peak_rss_mb']:.0f} MB",
                MET if retina["peak_rss_mb"] <= 400 else NOT_MET,
            )
        )
    return rows


def write_markdown(results: dict, path: Path, plot_path: Path) -> None:
    pre = results["preprocessing"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `python -m helpers benchmark` on {results['environment']}.",
        "Every ratio compares measurements made in the same run, interleaved, each timed call after a 50 ms",
        "pause in which the other contenders' thread pools go idle (as in a Lambda, which runs one of them).",
        "The host is shared and noisy: re-run for your own figures.",
        "",
        "Models: " + "; ".join(f"`{name}` {how}" for name, how in results["models"].items()) + ".",
        "",
        "## Goals",
        "",
        f"INT8 accuracy is judged only on at least {MIN_EVALUATION_IMAGES} images the model never trained on and only "
        f"when FP32 reaches mAP@0.5 >= {FP32_MAP50_FLOOR} there; otherwise it is *not measurable*, never met.",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *[f"| {goal} | {value} | {status} |" for goal, value, status in goals(results)],
        "",
        "## Bytes -> model tensor (JPEG in, 1x3x384x384 float32 out)",
        "",
        "| input | ours (Pillow + exact C letterbox) p50 ms | OpenCV imdecode + albumentations p50 ms | ratio |",
        "|---|---|---|---|",
        *[
            f"| {size} | {v['ours']['p50_ms']:.2f} | {v['opencv_albumentations']['p50_ms']:.2f} | "
            f"{v['opencv_albumentations']['p50_ms'] / v['ours']['p50_ms']:.2f}x |"
            for size, v in results["bytes_to_tensor"].items()
        ],
        "",
        "## Preprocessing (decoded 499x666 image -> 1x3x384x384 float32)",
        "",
        "| path | p50 ms | p90 ms |",
        "|---|---|---|",
        *[f"| {name} | {v['p50_ms']:.2f} | {v['p90_ms']:.2f} |" for name, v in pre.items()],
        "",
        "## Inference (one 384x384 input)",
        "",
        "| model @ threads | PyTorch p50/p90 ms | ORT FP32 p50/p90 ms | ORT INT8 p50/p90 ms | ORT/torch | INT8/FP32 | FP32 MB | INT8 MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, v in results["inference"].items():
        lines.append(
            f"| {key} | {v['torch']['p50_ms']:.0f} / {v['torch']['p90_ms']:.0f} | {v['ort_fp32']['p50_ms']:.0f} / {v['ort_fp32']['p90_ms']:.0f} "
            f"| {v['ort_int8']['p50_ms']:.0f} / {v['ort_int8']['p90_ms']:.0f} | {v['torch']['p50_ms'] / v['ort_fp32']['p50_ms']:.2f}x "
            f"| {v['ort_fp32']['p50_ms'] / v['ort_int8']['p50_ms']:.2f}x | {v['fp32_mb']:.1f} | {v['int8_mb']:.1f} |"
        )
    lines += [
        "",
        f"A 2048^3 fp32 MatMul in ONNX Runtime reached {results['gemm_peak_gflops_2_threads']:.0f} GFLOP/s on 2 threads "
        "in the same run (the ceiling for FP32 convolutions here).",
        "",
        f"## INT8 accuracy (served pipeline, images never trained on; FP32 floor mAP@0.5 >= {FP32_MAP50_FLOOR})",
        "",
        "| model | images | FP32 mAP / mAP@.5 | INT8 mAP / mAP@.5 |",
        "|---|---|---|---|",
    ]
    for name, how in results["models"].items():
        acc = results["int8_accuracy"].get(name)
        if acc is None:
            lines.append(f"| {name} | — | not measured: {how} | — |")
            continue
        images = f"{acc['images']['synthetic_holdout']} synthetic hold-out + {acc['images']['real_valid']} real valid"
        lines.append(
            f"| {name} | {images} | {acc['fp32']['map']:.3f} / {acc['fp32']['map_50']:.3f} | "
            f"{acc['int8']['map']:.3f} / {acc['int8']['map_50']:.3f} |"
        )
    lines += [
        "",
        "## The Lambda zip",
        "",
        "| arch | zipped MiB | unzipped MiB | untrimmed unzipped MiB | quota |",
        "|---|---|---|---|---|",
    ]
    for arch, z in results["zips"].items():
        lines.append(
            f"| {arch} | {z['zipped_bytes'] / 2**20:.1f} | {z['unzipped_bytes'] / 2**20:.1f} | "
            f"{z['untrimmed_unzipped_bytes'] / 2**20:.1f} | 50 MB zipped / 250 MB unzipped |"
        )
    lines += [
        "",
        "Cold start of the x86_64 zip under AWS's runtime client (awslambdaric, isolated CPython 3.12, a local "
        "Runtime API; median of 3; in AWS add the S3 model download). Cold init runs from the interpreter's start "
        "to its first request for an event (Lambda's Init Duration); the handler's own part (model and ONNX "
        "session) is its InitMs metric:",
        "",
        "| model | cold init ms | of which handler init ms | first request ms | warm p50 / p90 ms | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in results["cold_init"].items():
        lines.append(
            f"| {name} | {c['cold_init_ms']:.0f} | {c['handler_init_ms']:.0f} | "
            f"{c['first_request_ms']:.0f} | {c['warm']['p50_ms']:.0f} / {c['warm']['p90_ms']:.0f} | {c['peak_rss_mb']:.0f} |"
        )
    serving = results["serving_model"]
    lines += [
        "",
        f"## End-to-end handler latency by input size (in process, {serving})",
        "",
        "Decode (JPEG DCT scaling for photos at least twice the model size, see decode_for_model) and "
        "preprocess are the handler's own; the last column is what OpenCV imdecode + albumentations take "
        "for the same bytes -> tensor, measured interleaved with ours (table above).",
        "",
        "| input | JPEG MB | decode | preprocess | inference | postprocess | total ms | bytes -> tensor: ours / OpenCV + albumentations ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, t in results["by_size"].items():
        compared = results["bytes_to_tensor"].get(size)
        both = (
            f"{compared['ours']['p50_ms']:.1f} / {compared['opencv_albumentations']['p50_ms']:.1f}" if compared else "-"
        )
        lines.append(
            f"| {size} | {t['jpeg_mb']:.2f} | {t['decode']:.1f} | {t['preprocess']:.1f} | {t['inference']:.0f} | "
            f"{t['postprocess']:.1f} | {t['total']:.0f} | {both} |"
        )
    overhead = results["by_size"]["0.3 MP"]["total"] - results["by_size"]["0.3 MP"]["inference"]
    one = results["inference"][f"{serving} @ 1"]["ort_fp32"]["p50_ms"] + overhead
    two = results["inference"][f"{serving} @ 2"]["ort_fp32"]["p50_ms"] + overhead
    lines += [
        "",
        f"## Estimated cost per 1M requests ({serving}, 0.3 MP images)",
        "",
        f"Prices: us-east-1 on-demand, {LAMBDA_PRICE['date']} (x86_64 ${LAMBDA_PRICE['x86_64_gb_second_usd']}/GB-s, "
        f"${LAMBDA_PRICE['per_million_requests_usd']} per 1M requests). Assumption: Lambda gives 1 vCPU per 1,769 MB; below that "
        "latency grows in proportion; 1-thread latency from 1,769 MB, 2-thread latency from 3,538 MB. Latency = "
        "measured ORT FP32 inference + measured decode/pre/postprocess.",
        "",
        "| memory MB | est. latency ms | USD per 1M requests |",
        "|---|---|---|",
    ]
    for memory in (1024, 1769, 2048, 3538, 4096):
        latency = two if memory >= 2 * VCPU_MB else one if memory >= VCPU_MB else one * VCPU_MB / memory
        lines.append(f"| {memory} | {latency:.0f} | {estimated_cost_per_million(one, two, memory):.2f} |")
    lines += ["", f"![latency]({plot_path.name})", ""]
    from helpers.tools.accuracy import START

    previous = path.read_text() if path.is_file() else ""
    if START in previous:  # from the training section on, the text is helpers.tools.accuracy's and by hand: keep it
        lines += [previous[previous.index(START) :].rstrip("\n"), ""]
    path.write_text("\n".join(lines))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=100)
    keys = list(results["inference"])
    x = np.arange(len(keys))
    for offset, name in ((-0.25, "torch"), (0, "ort_fp32"), (0.25, "ort_int8")):
        ax1.bar(x + offset, [results["inference"][k][name]["p50_ms"] for k in keys], width=0.25, label=name)
    short = {
        "retinanet_resnet50_fpn": "RetinaNet",
        "fasterrcnn_mobilenet_v3_large_320_fpn": "MobileNetV3",
        "fasterrcnn_efficientnet_lite0_fpn": "Lite0",
    }
    labels = [f"{short.get(k.rsplit(' @', 1)[0], k)}\n{k.rsplit('@', 1)[1].strip()} thread(s)" for k in keys]
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set_ylabel("p50 ms"), ax1.set_title("inference, 384x384"), ax1.legend(fontsize=7)
    # Cost growth with the photo's size: the handler as it is, and the same request had its bytes ->
    # tensor been OpenCV imdecode + albumentations (the request minus its own decode and preprocess,
    # plus their measured bytes -> tensor; the rest of the request, base64 and JSON included, is alike).
    sizes = [s for s in results["by_size"] if s in results["bytes_to_tensor"]]
    megapixels = [float(s.split()[0]) for s in sizes]
    ours = [results["by_size"][s]["total"] for s in sizes]
    theirs = [
        results["by_size"][s]["total"]
        - results["by_size"][s]["decode"]
        - results["by_size"][s]["preprocess"]
        + results["bytes_to_tensor"][s]["opencv_albumentations"]["p50_ms"]
        for s in sizes
    ]
    ax2.plot(megapixels, ours, "o-", label="handler (Pillow, DCT-scaled decode, C letterbox)")
    ax2.plot(megapixels, theirs, "s--", label="with OpenCV imdecode + albumentations")
    ax2.set_xlabel("JPEG megapixels"), ax2.set_ylabel("p50 ms per request")
    ax2.set_title("end-to-end latency by input size"), ax2.set_ylim(bottom=0), ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def default_checkpoints() -> list[Path]:
    """The full run's checkpoint if there is one, else the quick run's (what `make run` trained)."""
    from helpers.paths import run_artifacts

    return next(
        ([c] for c in (run_artifacts(quick=False).checkpoint, run_artifacts(quick=True).checkpoint) if c.is_file()), []
    )


def main(argv=None) -> int:
    from helpers.paths import BENCHMARK_DIR, PROJECT_ROOT

    parser = argparse.ArgumentParser(prog="python -m helpers benchmark", description=__doc__)
    parser.add_argument(
        "--checkpoints",
        type=Path,
        nargs="*",
        default=None,
        help="trained checkpoints (one per model) for INT8 accuracy and serving figures; default: "
        "artifacts/full's, else artifacts/quick's; models without one run with random weights",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    checkpoints = default_checkpoints() if args.checkpoints is None else args.checkpoints
    if missing := [c for c in checkpoints if not c.is_file()]:
        print(f"error: checkpoint not found: {missing[0]}", file=sys.stderr)
        return 2
    try:
        results = run(BENCHMARK_DIR, checkpoints, args.repeats)
    except BenchmarkRefused as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    (BENCHMARK_DIR / "results.json").write_text(json.dumps(results, indent=2, default=float))
    plot_path = args.out.parent / "benchmarks.png"
    plot(results, plot_path)
    write_markdown(results, args.out, plot_path)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
