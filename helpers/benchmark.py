"""Benchmarks, measured side by side in one run; `python -m helpers.benchmark` writes BENCHMARKS.md.

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
import time
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import blog
from helpers.runtime.config import PREPROCESS
from helpers.runtime.preprocess import decode_image, preprocess
from helpers.timing import measure, percentiles


def preprocessing_comparison(image: np.ndarray, repeats: int = 30) -> dict[str, dict]:
    """decoded RGB -> model input, three ways: ours (NumPy), albumentations 2.0.8, the blog's float64."""
    from helpers.transforms import valid_transform

    albu = valid_transform(PREPROCESS)
    pil = Image.fromarray(image)

    def albumentations_path():
        out = albu(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"]
        return np.ascontiguousarray(out.transpose(2, 0, 1))[None]

    return {
        "ours": measure(lambda: preprocess(image), repeats),
        "albumentations": measure(albumentations_path, repeats),
        "blog": measure(lambda: blog.preprocess(pil), repeats),
    }


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
    """PyTorch eager vs ONNX Runtime FP32 vs INT8 on one input at `threads` threads, interleaved."""
    import torch

    from helpers.runtime.model import Detector

    torch.set_num_threads(threads)
    fp32 = Detector(fp32_path, threads=threads).session
    int8 = Detector(int8_path, threads=threads).session
    image = torch.from_numpy(tensor[0])
    feeds = {"images": tensor}
    results = {"torch": [], "ort_fp32": [], "ort_int8": []}
    runs = {
        "torch": lambda: module([image]),
        "ort_fp32": lambda: fp32.run(None, feeds),
        "ort_int8": lambda: int8.run(None, feeds),
    }
    with torch.no_grad():
        for _ in range(2):  # warm-up
            for fn in runs.values():
                fn()
        for _ in range(repeats):  # interleaved so host noise hits every contender alike
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                results[name].append((time.perf_counter() - start) * 1e3)
    return {name: percentiles(samples) for name, samples in results.items()}


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


def model_gflops(module, size: int) -> float:
    """FLOPs of backbone + FPN + head on one input (torch.utils.flop_counter; NMS not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        features = module.backbone(x)
        if hasattr(module, "head"):
            module.head(list(features.values()))
    return counter.get_total_flops() / 1e9


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

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}"
    )


def run(out_dir: Path, small_checkpoint: Path | None, repeats: int) -> dict:
    import torch

    from helpers import data as fridge_data
    from helpers.export import export_checkpoint, export_onnx
    from helpers.lambda_local import invoke_zip
    from helpers.metrics import evaluate_detector
    from helpers.models import BLOG_MODEL, build_detector
    from helpers.package import build
    from helpers.paths import split_file
    from helpers.quantize import quantize_int8
    from helpers.runtime import handler as lambda_handler
    from helpers.runtime.classmap import ClassMap
    from helpers.runtime.config import FRIDGE_CLASSES
    from helpers.runtime.model import Detector
    from helpers.train import load_checkpoint

    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"environment": _env_description()}
    records = fridge_data.load_sample()
    image_bytes = records[0].image_path.read_bytes()
    image = decode_image(image_bytes)
    tensor, _ = preprocess(image)
    has_split = small_checkpoint is not None and split_file(Path(small_checkpoint).parent).is_file()
    split = fridge_data.Split.read(split_file(Path(small_checkpoint).parent)) if has_split else None
    # INT8 calibrates on the trained run's real training images (the sample without a run).
    calibration = [
        preprocess(decode_image(r.image_path.read_bytes()))[0] for r in (split.real("train") if split else records)
    ]

    print("preprocessing ...", flush=True)
    results["preprocessing"] = preprocessing_comparison(image, repeats=max(30, repeats))

    print("models ...", flush=True)
    models = {}
    torch.manual_seed(0)
    retinanet, _ = build_detector(BLOG_MODEL, 5, 384, weights="none")
    retinanet.eval()
    models["retinanet_resnet50_fpn (blog, random weights)"] = (
        retinanet,
        export_onnx(
            retinanet,
            out_dir / "retinanet.onnx",
            ClassMap(FRIDGE_CLASSES),
            PREPROCESS,
            BLOG_MODEL,
            "none (random init)",
        ),
    )
    trained = None
    if has_split and Path(small_checkpoint).is_file():
        module = load_checkpoint(small_checkpoint)
        trained = f"{module.hparams.model_name} (trained)"
        models[trained] = (module.model.eval(), export_checkpoint(small_checkpoint, out_dir / "small.onnx"))
    for name, (module, path) in models.items():
        int8_path = quantize_int8(path, path.with_name(path.stem + "_int8.onnx"), calibration)
        models[name] = (module, path, int8_path)

    results["inference"] = {}
    for name, (module, path, int8_path) in models.items():
        for threads in (1, 2):
            print(f"inference {name} @ {threads} thread(s) ...", flush=True)
            results["inference"][f"{name} @ {threads}"] = {
                **inference_comparison(module, path, int8_path, tensor, threads, repeats),
                "fp32_mb": path.stat().st_size / 1e6,
                "int8_mb": int8_path.stat().st_size / 1e6,
            }
    results["gemm_peak_gflops_2_threads"] = gemm_peak_gflops(2)
    results["retinanet_gflops"] = model_gflops(retinanet, 384)

    if trained:
        _, path, int8_path = models[trained]
        print("INT8 accuracy ...", flush=True)
        holdout, valid = split.holdout(), split.real("valid")
        evaluation_set = holdout + valid  # never trained on
        results["int8_accuracy"] = {
            "images": f"{len(holdout)} synthetic hold-out + {len(valid)} real validation",
            "fp32": evaluate_detector(Detector(path), evaluation_set),
            "int8": evaluate_detector(Detector(int8_path), evaluation_set),
        }

    print("zips ...", flush=True)
    results["zips"] = {}
    for arch in ("x86_64", "arm64"):
        report = build(arch, "3.12", out_dir=out_dir / "dist")
        results["zips"][arch] = {
            k: report[k] for k in ("zipped_bytes", "unzipped_bytes", "untrimmed_unzipped_bytes", "sha256")
        }
    serving_model = models[trained or next(iter(models))][1]
    print("cold init of the zip in isolated Python 3.12 ...", flush=True)
    colds = []
    for _ in range(3):
        report = invoke_zip(
            out_dir / "dist" / "lambda-x86_64.zip",
            [{"image": base64.b64encode(image_bytes).decode()}] * 20,
            {"MODEL_PATH": str(serving_model), "LOG_LEVEL": "WARNING"},
        )
        colds.append(report)
    results["cold_init"] = {
        "import_libraries_ms": float(np.median([r["import_libraries_ms"] for r in colds])),
        "import_handler_and_init_ms": float(np.median([r["import_handler_and_init_ms"] for r in colds])),
        "cold_init_ms": float(np.median([r["cold_init_ms"] for r in colds])),
        "first_request_ms": float(np.median([r["latencies_ms"][0] for r in colds])),
        "warm": percentiles([x for r in colds for x in r["latencies_ms"][2:]]),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in colds),
        "model": serving_model.name,
    }

    print("latency by image size ...", flush=True)
    lambda_handler.init({"MODEL_PATH": str(serving_model), "LOG_LEVEL": "WARNING", "MAX_IMAGE_BYTES": str(50 << 20)})
    results["by_size"] = {}
    for megapixels in (0.3, 1, 4, 12):
        jpeg = synthetic_photo(megapixels)
        event = {"image": base64.b64encode(jpeg).decode()}
        timings = [lambda_handler.handler(event, None)["timings_ms"] for _ in range(max(5, repeats // 4))]
        results["by_size"][f"{megapixels} MP"] = {
            "jpeg_mb": len(jpeg) / 1e6,
            **{k: float(np.median([t[k] for t in timings])) for k in timings[0]},
        }
    return results


def goals(results: dict) -> list[tuple[str, str, bool]]:
    pre = results["preprocessing"]
    rows = []
    for key, value in results["inference"].items():
        if key.endswith("@ 2"):
            speedup = value["torch"]["p50_ms"] / value["ort_fp32"]["p50_ms"]
            rows.append((f"ORT >= 1.5x PyTorch eager ({key})", f"{speedup:.2f}x", speedup >= 1.5))
            int8 = value["ort_fp32"]["p50_ms"] / value["ort_int8"]["p50_ms"]
            rows.append((f"INT8 >= 1.5x FP32 ({key})", f"{int8:.2f}x", int8 >= 1.5))
    vs_albu = pre["albumentations"]["p50_ms"] / pre["ours"]["p50_ms"]
    vs_blog = pre["blog"]["p50_ms"] / pre["ours"]["p50_ms"]
    rows.append(("preprocessing at least as fast as albumentations", f"{vs_albu:.2f}x", vs_albu >= 1.0))
    rows.append(("preprocessing >= 3x the blog's path", f"{vs_blog:.2f}x", vs_blog >= 3.0))
    cold = results["cold_init"]["cold_init_ms"]
    rows.append(("cold init <= 1.5 s (local isolated 3.12)", f"{cold / 1e3:.2f} s", cold <= 1500))
    zipped = results["zips"]["x86_64"]["zipped_bytes"]
    rows.append(("zip <= 25 MB (x86_64)", f"{zipped / 1e6:.1f} MB", zipped <= 25e6))
    if "int8_accuracy" in results:
        lost = 100 * (results["int8_accuracy"]["fp32"]["map"] - results["int8_accuracy"]["int8"]["map"])
        rows.append(("INT8 loses <= 1 mAP point", f"{lost:+.1f} points", lost <= 1.0))
    return rows


def _serving_model_key(results: dict) -> str:
    """The trained model when there is one (it is what the zip serves), else the blog's RetinaNet."""
    names = [k.rsplit(" @", 1)[0] for k in results["inference"]]
    return next((n for n in names if "(trained)" in n), names[0])


def write_markdown(results: dict, path: Path, plot_path: Path) -> None:
    pre = results["preprocessing"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `python -m helpers benchmark` on {results['environment']}.",
        "Every ratio compares measurements made in the same run, interleaved. The host is shared and noisy:",
        "re-run for your own figures.",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *[f"| {goal} | {value} | {'yes' if met else '**no**'} |" for goal, value, met in goals(results)],
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
    retina_2 = next(
        (v for k, v in results["inference"].items() if k.startswith("retinanet") and k.endswith("@ 2")), None
    )
    if retina_2:
        efficiency = (
            results["retinanet_gflops"] / (retina_2["ort_fp32"]["p50_ms"] / 1e3) / results["gemm_peak_gflops_2_threads"]
        )
        lines += [
            "",
            f"RetinaNet-R50-FPN costs {results['retinanet_gflops']:.1f} GFLOP (backbone+FPN+head, torch flop counter); "
            f"a 2048^3 fp32 MatMul in ONNX Runtime reached {results['gemm_peak_gflops_2_threads']:.0f} GFLOP/s on 2 threads in "
            f"the same run, so FP32 RetinaNet inference runs at {100 * efficiency:.0f}% of that probe (above 100%: ORT's conv "
            "kernels beat the MatMul probe). FP32 graph tuning has little left to gain; INT8 is the lever.",
        ]
    if "int8_accuracy" in results:
        acc = results["int8_accuracy"]
        lines += [
            "",
            f"## INT8 accuracy ({acc['images']}; the trained small model)",
            "",
            "| | mAP | mAP@.5 |",
            "|---|---|---|",
            f"| FP32 | {acc['fp32']['map']:.3f} | {acc['fp32']['map_50']:.3f} |",
            f"| INT8 | {acc['int8']['map']:.3f} | {acc['int8']['map_50']:.3f} |",
        ]
    cold = results["cold_init"]
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
        f"Cold start of the x86_64 zip in an isolated CPython 3.12 (`-I -S`, model `{cold['model']}`, median of 3):",
        f"imports of numpy+Pillow+onnxruntime {cold['import_libraries_ms']:.0f} ms, handler import + ONNX session "
        f"{cold['import_handler_and_init_ms']:.0f} ms, **cold init {cold['cold_init_ms']:.0f} ms**; first request "
        f"{cold['first_request_ms']:.0f} ms; warm p50 {cold['warm']['p50_ms']:.0f} ms / p90 {cold['warm']['p90_ms']:.0f} ms; "
        f"peak RSS {cold['peak_rss_mb']:.0f} MB. (In AWS add the S3 model download to the cold start.)",
        "",
        "## End-to-end handler latency by input size (in process, same model)",
        "",
        "| input | JPEG MB | decode | preprocess | inference | postprocess | total ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, t in results["by_size"].items():
        lines.append(
            f"| {size} | {t['jpeg_mb']:.2f} | {t['decode']:.0f} | {t['preprocess']:.1f} | {t['inference']:.0f} | {t['postprocess']:.1f} | {t['total']:.0f} |"
        )
    serving = _serving_model_key(results)
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
    from helpers.accuracy import START

    previous = path.read_text() if path.is_file() else ""
    if START in previous:  # from the training section on, the text is helpers.accuracy's and by hand: keep it
        lines += [previous[previous.index(START) :].rstrip("\n"), ""]
    path.write_text("\n".join(lines))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=80)
    keys = list(results["inference"])
    x = np.arange(len(keys))
    for offset, name in ((-0.25, "torch"), (0, "ort_fp32"), (0.25, "ort_int8")):
        ax1.bar(x + offset, [results["inference"][k][name]["p50_ms"] for k in keys], width=0.25, label=name)
    short = {"retinanet_resnet50_fpn": "RetinaNet-R50", "fasterrcnn_mobilenet_v3_large_320_fpn": "FRCNN-MobileNetV3"}
    labels = [f"{short.get(k.split(' (')[0], k.split(' (')[0])}\n{k.rsplit('@', 1)[1].strip()} thread(s)" for k in keys]
    ax1.set_xticks(x, labels, fontsize=7)
    ax1.set_ylabel("p50 ms"), ax1.set_title("inference, 384x384"), ax1.legend(fontsize=7)
    sizes = list(results["by_size"])
    bottom = np.zeros(len(sizes))
    for stage in ("decode", "preprocess", "inference", "postprocess"):
        values = np.array([results["by_size"][s][stage] for s in sizes])
        ax2.bar(sizes, values, bottom=bottom, label=stage)
        bottom += values
    ax2.set_ylabel("ms"), ax2.set_title("handler latency by input size"), ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    from helpers.paths import BENCHMARK_DIR, PROJECT_ROOT, run_artifacts

    parser = argparse.ArgumentParser(prog="python -m helpers benchmark", description=__doc__)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=run_artifacts(quick=False).checkpoint,
        help="trained small-model checkpoint for INT8 accuracy and serving figures",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    work = BENCHMARK_DIR
    results = run(work, args.checkpoint, args.repeats)
    (work / "results.json").write_text(json.dumps(results, indent=2, default=float))
    plot_path = args.out.parent / "benchmarks.png"
    plot(results, plot_path)
    write_markdown(results, args.out, plot_path)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
