"""What each model learns, measured: `python -m helpers accuracy [--runs quick:lite0,...] [--seeds 1,2]`.

For every (mode, model, seed) it trains (helpers.train.run.train, the same configuration `make run` or
full mode would use), then measures on the synthetic hold-out and the 6 real sample images:
COCO mAP / mAP@.5 (PyTorch), how many of the 12 real boxes are found (right label, IoU >= 0.5,
score >= 0.3; train and validation images counted apart), and the served ONNX model FP32 vs
static INT8: size, latency at 2 threads and mAP through the Lambda's own Detector. Results go to
artifacts/accuracy/results.json and into the "Training" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from helpers.data import dataset as fridge_data
from helpers.evaluate.metrics import found_boxes, mean_average_precision
from helpers.paths import ACCURACY_DIR, PROJECT_ROOT, split_file
from helpers.tools.markdown import replace_section
from helpers.train.models import LITE0_MODEL, SMALL_MODEL
from helpers.train.run import TrainConfig, evaluate, load_checkpoint, predict, train

SHORT_NAMES = {"lite0": LITE0_MODEL, "small": SMALL_MODEL}
FOUND_MIN_SCORE = 0.3


def train_config(mode: str, model: str, seed: int, out_dir: Path) -> TrainConfig:
    """quick = what CI and `make run` train; full = full mode offline (the Fridge download fails
    here, so the sample; online it would be the 128 images)."""
    settings = dict(model=SHORT_NAMES[model], seed=seed, out_dir=str(out_dir))
    return TrainConfig.quick(**settings) if mode == "quick" else TrainConfig(**settings)


def measure_run(mode: str, model: str, seed: int, work: Path) -> dict:
    from helpers.evaluate.metrics import evaluate_detector
    from helpers.export.onnx_export import export_checkpoint
    from helpers.export.quantize import calibration_inputs, quantize_int8
    from helpers.runtime.model import Detector
    from helpers.runtime.preprocess import decode_for_model, preprocess
    from helpers.tools.timing import measure

    out_dir = work / f"{mode}-{model}-{seed}"
    summary = train(train_config(mode, model, seed, out_dir))
    module = load_checkpoint(summary["checkpoint"])
    real = fridge_data.load_sample()
    split = fridge_data.Split.read(split_file(out_dir))
    holdout = split.holdout()
    valid_names = set(split.valid)
    predictions, targets = predict(module, real)
    found = {r.image_path.name: found_boxes(p, t, FOUND_MIN_SCORE) for r, p, t in zip(real, predictions, targets)}
    is_valid = [r.image_path.name in valid_names for r in real]

    def real_map(subset: list[bool]) -> dict[str, float]:  # from the predictions above, not a second pass
        chosen = [i for i, keep in enumerate(subset) if keep]
        return mean_average_precision(
            [predictions[i] for i in chosen], [targets[i] for i in chosen], module.class_map.names
        )

    fp32 = export_checkpoint(summary["checkpoint"], out_dir / "model.onnx")
    int8 = quantize_int8(fp32, out_dir / "model_int8.onnx", calibration_inputs(split, module.preprocess))
    tensor = preprocess(decode_for_model(real[0].image_path.read_bytes()))[0]
    served = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        detector = Detector(path, threads=2)
        served[name] = {
            "mb": path.stat().st_size / 1e6,
            "p50_ms_2_threads": measure(
                lambda detector=detector: detector.session.run(None, {detector.input_name: tensor}), repeats=20
            )["p50_ms"],
            **{k: v for k, v in evaluate_detector(detector, holdout + real).items() if not k.startswith("ap/")},
        }
    return {
        "mode": mode,
        "model": summary["model"],
        "seed": seed,
        "weights": summary["weights_used"],
        "data": summary["data"]["description"],
        "dataset": summary["data"]["dataset"] + (" (fridge unreachable)" if summary["data"]["fallback_reason"] else ""),
        "train_seconds": summary["seconds"],
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "n_train": summary["n_train"],
        "n_holdout": len(holdout),
        "holdout": evaluate(module, holdout),
        "real": real_map([True] * len(real)),
        "real_valid": real_map(is_valid),
        "found": sum(found.values()),
        "found_valid": sum(found[n] for n in valid_names),
        "found_per_image": found,
        "valid_images": sorted(valid_names),
        "served": served,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "## Training: what the models learn (`python -m helpers accuracy`)",
        "",
        "2 CPUs. Every run is judged on the synthetic hold-out (object photos never seen in training) and on",
        "the 6 real sample images; *data* is what it trained on (full mode asks for the 128-image Fridge set",
        "and, where it cannot be downloaded, falls back to the sample). *found*: of the 12 real boxes, how many a detection with the right",
        f"label finds at IoU >= 0.5 and score >= {FOUND_MIN_SCORE} (4 of them sit on the 2 validation images,",
        "whose names are listed). Served = the exported ONNX model through the Lambda's Detector on hold-out +",
        "real images; latency = ONNX Runtime, one 384x384 input, 2 threads.",
        "",
        "| mode | model | data | seed | train s | hold-out mAP / @.5 | real mAP / @.5 | found (valid) | FP32 MB / ms / mAP | INT8 MB / ms / mAP |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, i = r["served"]["fp32"], r["served"]["int8"]
        lines.append(
            f"| {r['mode']} | {r['model']} | {r['dataset']} | {r['seed']} | {r['train_seconds']:.0f} "
            f"| {r['holdout']['map']:.3f} / {r['holdout']['map_50']:.3f} | {r['real']['map']:.3f} / {r['real']['map_50']:.3f} "
            f"| {r['found']}/12 ({r['found_valid']}/4 on {', '.join(r['valid_images'])}) "
            f"| {f['mb']:.1f} / {f['p50_ms_2_threads']:.0f} / {f['map']:.3f} | {i['mb']:.1f} / {i['p50_ms_2_threads']:.0f} / {i['map']:.3f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers accuracy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs",
        default="quick:lite0,quick:small,full:lite0",
        help="comma-separated mode:model, mode in quick|full, model in " + "|".join(SHORT_NAMES),
    )
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    runs = [tuple(item.split(":")) for item in args.runs.split(",")]
    if any(len(r) != 2 or r[0] not in ("quick", "full") or r[1] not in SHORT_NAMES for r in runs):
        parser.error(f"--runs: expected mode:model pairs like quick:lite0, got {args.runs!r}")
    torch.set_num_threads(2)
    work = ACCURACY_DIR
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    rows = json.loads(results_path.read_text()) if results_path.is_file() else []
    for mode, model in runs:
        for seed in (int(s) for s in args.seeds.split(",")):
            started = time.perf_counter()
            row = measure_run(mode, model, seed, work)
            rows = [r for r in rows if (r["mode"], r["model"], r["seed"]) != (mode, row["model"], seed)] + [row]
            results_path.write_text(json.dumps(rows, indent=2))
            print(
                f"{mode} {model} seed {seed}: found {row['found']}/12, hold-out mAP@.5 {row['holdout']['map_50']:.3f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    rows.sort(key=lambda r: (r["mode"] != "quick", r["model"], r["seed"]))
    replace_section(args.out, "training", markdown(rows))  # BENCHMARKS.md's "training" section is this tool's
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
