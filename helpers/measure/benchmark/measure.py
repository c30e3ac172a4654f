"""The benchmark's measurements: `run` measures every section into one results dict.

Ratios are taken between measurements made in the same process, interleaved, on the same inputs, so a
noisy host moves both sides. Nothing here is a test: it measures, and goals.py judges.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from helpers.baselines import blog
from helpers.build import native
from helpers.build.package import build
from helpers.data import dataset as fridge_data
from helpers.evaluate.metrics import evaluate_detector
from helpers.export.onnx_export import export_checkpoint, export_onnx
from helpers.export.quantize import calibration_inputs, quantize_int8
from helpers.local.invoke import invoke_zip
from helpers.measure import lambda_share
from helpers.measure.benchmark.levers import gemm_peak, measure_levers
from helpers.measure.benchmark.results import Results
from helpers.measure.targets import MIN_EVALUATION_IMAGES
from helpers.measure.timing import SETTLE_S, cpu_model, interleaved, percentiles
from helpers.paths import SAMPLE_DIR, shown, split_file
from helpers.pipeline.steps import SERVED_CALIBRATION_IMAGES
from helpers.runtime import handler as lambda_handler
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS
from helpers.runtime.contract import ModelContract
from helpers.runtime.decode import decode_for_model, decode_image
from helpers.runtime.kernel import load_kernel
from helpers.runtime.model import Detector
from helpers.runtime.preprocess import preprocess, preprocess_numpy
from helpers.train.data import DetectionDataset, collate
from helpers.train.models import LITE0_MODEL, MODEL_NAMES, build_detector
from helpers.train.module import load_checkpoint
from helpers.train.roi_align_grad import fast_roi_align_backward
from helpers.train.transforms import train_transform, valid_transform

#: The photo sizes of the bytes -> tensor and end-to-end tables, in megapixels.
SIZES_MP = (0.3, 1, 4, 12)


class BenchmarkRefused(ValueError):
    """A checkpoint the benchmark cannot judge fairly (no split record, too few evaluation images)."""


# ---- the contenders, one comparison each ---------------------------------------------------------


def preprocessing_comparison(image: np.ndarray, repeats: int = 30) -> dict[str, dict]:
    """decoded RGB -> model input, interleaved: ours (C kernel, and the NumPy path used without it),
    albumentations 2.0.8, the blog's float64."""
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


def bytes_to_tensor_comparison(jpeg: bytes, repeats: int) -> dict[str, dict]:
    """JPEG bytes -> model input, ours (Pillow decode + exact C letterbox) vs what a user would pick
    with the training libraries (OpenCV imdecode + albumentations), interleaved."""
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


def inference_comparison(
    module, fp32_path: Path, int8_path: Path, tensor: np.ndarray, threads: int, repeats: int
) -> dict:
    """PyTorch eager vs ONNX Runtime FP32 vs INT8 on one input at `threads` threads, interleaved, each
    after the others' thread pools have gone idle (see helpers.measure.timing.interleaved)."""
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


def training_step_comparison(records, repeats: int, threads: int = 2) -> dict[str, dict]:
    """A training step of the Lite0 detector (forward and backward of a batch of 2 real photos through
    the training transform) with torchvision's RoIAlign backward and with ours, in turn on each batch
    (the kernel installed outside the timed part). Both sides sample the same anchors and proposals
    (seeded): the same work, and the same gradients (tests/test_roi_align_grad.py)."""
    torch.set_num_threads(threads)
    dataset = DetectionDataset(records, train_transform(PREPROCESS, seed=0), ClassMap(FRIDGE_CLASSES))
    batches = [collate([dataset[i], dataset[i + 1]]) for i in range(0, len(dataset) - 1, 2)]
    torch.manual_seed(0)  # the detector's new layers
    model, _ = build_detector(LITE0_MODEL, len(FRIDGE_CLASSES) + 1, PREPROCESS.image_size)
    model.train()
    backwards = {"torchvision's": contextlib.nullcontext, "ours": fast_roi_align_backward}
    samples: dict[str, list[float]] = {name: [] for name in backwards}
    for round_index in range(repeats + 1):  # round 0 warms up; the order alternates between rounds
        for name in sorted(backwards, reverse=bool(round_index % 2)):
            with backwards[name]():
                torch.manual_seed(round_index)
                start = time.perf_counter()
                model.zero_grad()
                sum(model(*batches[round_index % len(batches)]).values()).backward()
                elapsed_ms = (time.perf_counter() - start) * 1e3
            if round_index:
                samples[name].append(elapsed_ms)
    return {name: percentiles(values) for name, values in samples.items()}


# ---- the models ----------------------------------------------------------------------------------


def _environment() -> str:
    return (
        f"{platform.machine()} ({cpu_model()}), {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
        f"letterbox kernel {'loaded' if load_kernel() else 'NOT built'} ({native.compiler_version(native.host_arch())})"
    )


def _trained_model(checkpoint: Path, out_dir: Path) -> tuple[str, dict]:
    """A checkpoint's model, exported and quantised; refused unless its split leaves enough unseen images."""
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
    calibration = calibration_inputs(split, module.preprocess, limit=SERVED_CALIBRATION_IMAGES)
    return name, {
        "module": module.model.eval(),
        "checkpoint": Path(checkpoint),
        "calibration": calibration,
        "fp32": fp32,
        "trained": f"trained ({shown(Path(checkpoint).parent)})",
        "split": split,
        "int8": quantize_int8(fp32, out_dir / f"{name}_int8.onnx", calibration),
    }


def _random_model(name: str, out_dir: Path, calibration: list[np.ndarray]) -> dict:
    """A model no checkpoint was given for: random weights (seeded), exported and quantised all the same."""
    torch.manual_seed(0)
    model, _ = build_detector(name, len(FRIDGE_CLASSES) + 1, PREPROCESS.image_size, weights="none")
    model.eval()
    contract = ModelContract(ClassMap(FRIDGE_CLASSES), PREPROCESS)
    fp32 = export_onnx(model, out_dir / f"{name}_random.onnx", contract, name, "none (random init)")
    return {
        "module": model,
        "fp32": fp32,
        "trained": None,
        "split": None,
        "int8": quantize_int8(fp32, out_dir / f"{name}_random_int8.onnx", calibration),
    }


def _models(out_dir: Path, checkpoints: list[Path], calibration_sample: list[np.ndarray]) -> dict[str, dict]:
    """Every model the project ships: trained from a given checkpoint, else random weights (said so)."""
    models = dict(_trained_model(checkpoint, out_dir) for checkpoint in checkpoints)
    for name in MODEL_NAMES:
        if name not in models:
            models[name] = _random_model(name, out_dir, calibration_sample)
    return models


# ---- the sections of a run, each a part of the results -------------------------------------------


def _bytes_to_tensor(image_bytes: bytes, photos: dict[float, bytes], repeats: int) -> dict[str, dict]:
    """The sample as it is, then each synthetic photo (fewer rounds from 4 MP: each takes long)."""
    by_input = {"499x666 sample": bytes_to_tensor_comparison(image_bytes, max(30, repeats))}
    for megapixels, jpeg in photos.items():
        rounds = max(30, repeats) if megapixels < 4 else max(5, repeats // 2)
        by_input[f"{megapixels} MP"] = bytes_to_tensor_comparison(jpeg, rounds)
    return by_input


def _inference(models: dict[str, dict], tensor: np.ndarray, repeats: int) -> dict[str, dict]:
    figures = {}
    for name, m in models.items():
        for threads in (1, 2):
            print(f"inference {name} @ {threads} thread(s) ...", flush=True)
            figures[f"{name} @ {threads}"] = {
                **inference_comparison(m["module"], m["fp32"], m["int8"], tensor, threads, repeats),
                "fp32_mb": m["fp32"].stat().st_size / 1e6,
                "int8_mb": m["int8"].stat().st_size / 1e6,
            }
    return figures


def _int8_accuracy(models: dict[str, dict]) -> dict[str, dict]:
    """FP32 and INT8 through the served Detector on the images each trained model never saw."""
    figures = {}
    for name, m in models.items():
        if m["split"] is None:
            continue
        print(f"INT8 accuracy {name} ...", flush=True)
        test = m["split"].evaluation()  # the test images, which chose nothing; the synthetic hold-out is not judged
        figures[name] = {
            "images": {"test": len(test)},
            "fp32": evaluate_detector(Detector(m["fp32"]), test),
            "int8": evaluate_detector(Detector(m["int8"]), test),
        }
    return figures


def preflight() -> dict[str, str]:
    """{optional part: why this machine cannot run it}, checked before any work starts, so a missing
    tool is one line up front and the rest is measured, instead of a traceback at the end."""
    skipped = {}
    try:
        native.compiler_for("arm64")
    except native.CompilerMissing as err:
        skipped["arm64 zip"] = f"{err} (Debian: gcc-aarch64-linux-gnu)"
    return skipped


def _zips(dist: Path, skipped: dict[str, str]) -> dict[str, dict]:
    figures = {}
    for arch in (a for a in ("x86_64", "arm64") if f"{a} zip" not in skipped):
        report = build(arch, "3.12", out_dir=dist)
        figures[arch] = {k: report[k] for k in ("zipped_bytes", "unzipped_bytes", "untrimmed_unzipped_bytes", "sha256")}
    return figures


def _cold_init(served: dict[str, Path], zip_path: Path, image_bytes: bytes) -> dict[str, dict]:
    """Each model as served (the shipped file where the run decided one) in the x86_64 zip under the
    runtime client: medians of 3 cold starts of 10 requests."""
    figures = {}
    for name, model_path in served.items():
        print(f"cold init of the zip under the runtime client, {name} ...", flush=True)
        colds = [
            invoke_zip(
                zip_path,
                [{"image": base64.b64encode(image_bytes).decode()}] * 10,
                {"MODEL_PATH": str(model_path), "LOG_LEVEL": "WARNING"},
            )
            for _ in range(3)
        ]
        figures[name] = {
            "cold_init_ms": float(np.median([r["cold_init_ms"] for r in colds])),
            "handler_init_ms": float(np.median([r["handler_init_ms"] for r in colds])),
            "first_request_ms": float(np.median([r["latencies_ms"][0] for r in colds])),
            "warm": percentiles([x for r in colds for x in r["latencies_ms"][2:]]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in colds),
        }
    return figures


def _by_size(model_path: Path, photos: dict[float, bytes], repeats: int) -> dict[str, dict]:
    """The handler in process on each photo: median of each of its timings."""
    lambda_handler.init({"MODEL_PATH": str(model_path), "LOG_LEVEL": "WARNING", "MAX_IMAGE_BYTES": str(50 << 20)})
    figures = {}
    for megapixels, jpeg in photos.items():
        event = {"image": base64.b64encode(jpeg).decode()}
        timings = []
        for _ in range(max(5, repeats // 4)):
            # Requests reach a Lambda apart; back to back, each one's decode would run beside the
            # previous inference's still-spinning ONNX Runtime workers (see helpers.measure.timing.interleaved).
            time.sleep(SETTLE_S)
            timings.append(lambda_handler.handler(event, None)["timings_ms"])
        figures[f"{megapixels} MP"] = {
            "jpeg_mb": len(jpeg) / 1e6,
            **{k: float(np.median([t[k] for t in timings])) for k in timings[0]},
        }
    return figures


def run(out_dir: Path, checkpoints: list[Path], repeats: int, skipped: dict[str, str] | None = None) -> Results:
    """Every section, in this order, into the Results that report.py renders and results.json keeps;
    the parts named in `skipped` (see preflight) are left out and the report says why."""
    skipped = preflight() if skipped is None else skipped
    native.build_in_place()  # "ours" is what the zip runs: the C letterbox
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"environment": _environment(), "skipped": skipped}
    records = fridge_data.load_sample()
    image_bytes = records[0].image_path.read_bytes()
    image = decode_image(image_bytes)
    tensor, _ = preprocess(image)

    print("preprocessing ...", flush=True)
    results["preprocessing"] = preprocessing_comparison(image, repeats=max(30, repeats))
    photos = {megapixels: synthetic_photo(megapixels) for megapixels in SIZES_MP}  # also the end-to-end table's
    results["bytes_to_tensor"] = _bytes_to_tensor(image_bytes, photos, repeats)

    print("models ...", flush=True)
    sample_calibration = [preprocess(decode_for_model(r.image_path.read_bytes()))[0] for r in records]
    models = _models(out_dir, checkpoints, sample_calibration)
    results["models"] = {
        name: m["trained"] or "random weights: no trained checkpoint given" for name, m in models.items()
    }
    results["inference"] = _inference(models, tensor, repeats)
    print("training step ...", flush=True)
    results["training_step"] = training_step_comparison(records, repeats)
    results["gemm_peak_gflops_2_threads"] = gemm_peak(2)
    results["int8_accuracy"] = _int8_accuracy(models)

    shipped = _levers(results, models.get(LITE0_MODEL), image_bytes, out_dir / "levers", repeats)
    print("zips ...", flush=True)
    results["zips"] = _zips(out_dir / "dist", skipped)
    served = {name: m["fp32"] for name, m in models.items()} | ({LITE0_MODEL: shipped} if shipped else {})
    results["cold_init"] = _cold_init(served, out_dir / "dist" / "lambda-x86_64.zip", image_bytes)

    serving = next((n for n, m in models.items() if m["trained"]), LITE0_MODEL)
    print(f"latency by image size ({serving}) ...", flush=True)
    results["serving_model"] = serving
    results["by_size"] = _by_size(shipped or models[serving]["fp32"], photos, repeats)
    if shipped and (why := lambda_share.available()) is None:
        results["memory"] = lambda_share.sweep(shipped, records[0].image_path)
    else:
        skipped["memory table"] = why if shipped else "no trained checkpoint given"
    return Results.from_json(results)


def _levers(results: dict, lite0: dict | None, jpeg: bytes, out_dir: Path, repeats: int) -> Path | None:
    """The serving levers and the int8 ceiling into `results`; the shipped model's path (None untrained)."""
    results["int8_gemm_peak_gops_2_threads"] = gemm_peak(2, int8=True)
    if not (lite0 and lite0["trained"]):
        return None
    print("serving levers ...", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    levers = measure_levers(
        lite0["checkpoint"], lite0["module"], lite0["split"], lite0["calibration"], jpeg, out_dir, repeats
    )
    results["levers"] = levers
    return out_dir / levers["shipped"]
