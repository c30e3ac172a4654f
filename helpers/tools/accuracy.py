"""What each model learns, measured: `python -m helpers accuracy [--runs quick:lite0,...] [--seeds 1,2]`.

For every (mode, model, seed) it trains (helpers.train.run.train, the same configuration `make run` or
full mode would use), then measures first on the unseen real images of its split (hold-out object
photos + fridge validation images): COCO mAP / mAP@.5, recall and precision at the served threshold
(the run's own, chosen on those images), the fridge validation boxes found there (by image); then, as
a secondary figure, the synthetic hold-out; and the served ONNX model FP32 vs static INT8: size,
latency at 2 threads and mAP on the unseen real images through the Lambda's own Detector. Results go
to artifacts/accuracy/results.json and into the "Training" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from helpers.data import dataset as fridge_data
from helpers.paths import ACCURACY_DIR, PROJECT_ROOT, split_file
from helpers.tools.markdown import replace_section
from helpers.train.models import LITE0_MODEL, SMALL_MODEL
from helpers.train.run import TrainConfig, evaluate, load_checkpoint, train

SHORT_NAMES = {"lite0": LITE0_MODEL, "small": SMALL_MODEL}


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
    split = fridge_data.Split.read(split_file(out_dir))
    unseen, holdout = split.evaluation(), split.holdout()
    fp32 = export_checkpoint(summary["checkpoint"], out_dir / "model.onnx")
    int8 = quantize_int8(fp32, out_dir / "model_int8.onnx", calibration_inputs(split, module.preprocess))
    tensor = preprocess(decode_for_model(unseen[0].image_path.read_bytes()))[0]
    served = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        detector = Detector(path, threads=2)
        served[name] = {
            "mb": path.stat().st_size / 1e6,
            "p50_ms_2_threads": measure(
                lambda detector=detector: detector.session.run(None, {detector.input_name: tensor}), repeats=20
            )["p50_ms"],
            **{k: v for k, v in evaluate_detector(detector, unseen).items() if not k.startswith("ap/")},
        }
    figures = summary["unseen"]
    at = figures["at_served_threshold"]
    fridge_valid = {name: figures["found_per_image"][name] for name in split.valid if name in SAMPLE_NAMES}
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
        "unseen": {
            "images": figures["images"],
            "boxes": figures["boxes"],
            "map": figures["map"],
            "map_50": figures["map_50"],
            "threshold": figures["served_threshold"],
            "recall": at["recall"],
            "precision": at["precision"],
        },
        "fridge_valid_found": fridge_valid,
        "n_holdout": len(holdout),
        "holdout": evaluate(module, holdout) if holdout else None,
        "served": served,
    }


SAMPLE_NAMES = {f"{n}.jpg" for n in range(10, 16)}


def markdown(rows: list[dict]) -> str:
    lines = [
        "## Training: what the models learn (`python -m helpers accuracy`)",
        "",
        "2 CPUs (shared while measured: seconds are inflated). Every run is judged first on its *unseen* real",
        "images (split.json): the object photos held out of training (20% of each class, by photo) and the",
        "2 fridge validation images. *served*: recall / precision at the run's served threshold (the best F1",
        "on those images, written into the model's metadata); *fridge valid*: the fridge validation boxes",
        "found there (right label, IoU >= 0.5). The synthetic hold-out (composites of the hold-out photos) is",
        "secondary. FP32 / INT8 = the exported model through the Lambda's Detector on the unseen images;",
        "latency = ONNX Runtime, one 384x384 input, 2 threads.",
        "",
        "| mode | model | data | seed | train s | unseen mAP / @.5 | served thr: R / P | fridge valid | synthetic hold-out mAP@.5 | FP32 MB / ms / mAP | INT8 MB / ms / mAP |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, i, u = r["served"]["fp32"], r["served"]["int8"], r["unseen"]
        holdout = f"{r['holdout']['map_50']:.3f}" if r["holdout"] else "-"
        fridge = ", ".join(f"{name} {found}" for name, found in r["fridge_valid_found"].items())
        lines.append(
            f"| {r['mode']} | {r['model']} | {r['dataset']} | {r['seed']} | {r['train_seconds']:.0f} "
            f"| {u['map']:.3f} / {u['map_50']:.3f} ({u['images']} images, {u['boxes']} boxes) "
            f"| {u['threshold']:.2f}: {u['recall']:.2f} / {u['precision']:.2f} | {fridge} | {holdout} "
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
                f"{mode} {model} seed {seed}: unseen mAP@.5 {row['unseen']['map_50']:.3f}, "
                f"recall {row['unseen']['recall']:.2f} / precision {row['unseen']['precision']:.2f} "
                f"at {row['unseen']['threshold']:.2f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    rows.sort(key=lambda r: (r["mode"] != "quick", r["model"], r["seed"]))
    replace_section(args.out, "training", markdown(rows))  # BENCHMARKS.md's "training" section is this tool's
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
