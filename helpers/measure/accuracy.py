"""What each model learns, measured on images that chose nothing:
`python -m helpers accuracy [--runs quick:lite0,...] [--seeds 42] [--folds 0,1,2,3,4]`.

For every (mode, model, seed, fold) it trains (helpers.train.run.train, the configuration `make run` or
full mode would use, with that fold as the test part: helpers.data.splits; a folder that already holds
that very training is measured again without training), then reports on the fold's
test images at the served threshold (chosen on the validation images): COCO mAP / mAP@.5, recall and
precision, each with its 95% bootstrap interval over images; the fridge photos' boxes found there; the
served ONNX model FP32 against static INT8 through the Lambda's own Detector, calibrated on every
training image and on the SERVED_CALIBRATION_IMAGES (16, spread over them) that `make run` uses; recall
under seven perturbations (helpers.measure.fold_robustness). The
mean and spread over folds are what a user can trust; each is judged against the training targets
(QUICK_* and FULL_* in helpers.measure.targets). Results accumulate in artifacts/accuracy/results.json (a
run replaces the same mode, model, seed and fold; a result of another recipe or code version is dropped,
said so); the table goes into the "training" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from helpers.data import dataset as fridge_data
from helpers.measure import fold_robustness
from helpers.measure.accuracy_report import README_SECTION, SECTION, AccuracyRow, TestFigures, headline, markdown
from helpers.measure.markdown import has_section, replace_section
from helpers.paths import ACCURACY_DIR, PROJECT_ROOT, split_file
from helpers.pipeline.steps import SERVED_CALIBRATION_IMAGES
from helpers.train.config import TrainConfig
from helpers.train.models import LITE0_MODEL, SMALL_MODEL
from helpers.train.run import train
from helpers.train.summary import RunSummary

SHORT_NAMES = {"lite0": LITE0_MODEL, "small": SMALL_MODEL}
SAMPLE_NAMES = {f"{n}.jpg" for n in range(10, 16)}


def train_config(mode: str, model: str, seed: int, out_dir: Path, fold: int = 0) -> TrainConfig:
    """quick = what CI and `make run` train; full = full mode offline (the Fridge download fails
    here, so the sample; online it would be the 128 images). `fold` picks the test part."""
    settings = dict(model=SHORT_NAMES[model], seed=seed, fold=fold, out_dir=str(out_dir))
    return TrainConfig.quick(**settings) if mode == "quick" else TrainConfig(**settings)


def measure_run(mode: str, model: str, seed: int, fold: int, work: Path) -> AccuracyRow:
    """Train unless the run's folder already holds today's training (same fingerprint), then measure."""
    out_dir = work / f"{mode}-{model}-{seed}-fold{fold}"
    config = train_config(mode, model, seed, out_dir, fold)
    summary = RunSummary.load(out_dir / "summary.json") if (out_dir / "summary.json").is_file() else None
    trained = summary and summary.config_hash == config.fingerprint()
    if trained and Path(summary.checkpoint).is_file() and split_file(Path(summary.checkpoint).parent).is_file():
        print(f"{mode} {model} seed {seed} fold {fold}: measuring the run trained {summary.finished}", flush=True)
    else:
        summary = train(config)
    return measure_trained(mode, summary, out_dir)


def measure_trained(mode: str, summary: RunSummary, out_dir: Path) -> AccuracyRow:
    """The figures of one finished training run (its summary.json; the split is read beside its
    checkpoint). out_dir receives the exported FP32 and INT8 models."""
    from helpers.evaluate.metrics import evaluate_detector
    from helpers.export.onnx_export import export_checkpoint
    from helpers.export.quantize import calibration_inputs, quantize_int8
    from helpers.runtime.model import Detector

    split = fridge_data.Split.read(split_file(Path(summary.checkpoint).parent))
    test = split.evaluation()
    fp32 = Detector(export_checkpoint(summary.checkpoint, out_dir / "model.onnx"), threads=2)
    served = {"fp32": evaluate_detector(fp32, test)}
    for name, limit in (("int8_all", None), ("int8_served", SERVED_CALIBRATION_IMAGES)):
        calibration = calibration_inputs(split, fp32.config, limit)  # the exported model's own contract
        path = quantize_int8(fp32.path, out_dir / f"model_{name}.onnx", calibration)
        served[name] = evaluate_detector(Detector(path, threads=2), test)
    figures = summary.test
    return AccuracyRow(
        mode=mode,
        model=summary.model,
        seed=summary.config["seed"],
        config_hash=summary.config_hash,
        weights=summary.weights_used,
        dataset=summary.data["dataset"] + (" (fridge unreachable)" if summary.data["fallback_reason"] else ""),
        train_seconds=summary.seconds,
        cpu_seconds=summary.cpu_seconds,
        epochs=summary.epochs,
        best_epoch=summary.best_epoch,
        n_train=summary.n_train,
        fold=summary.config["fold"],
        test=TestFigures(**{field.name: figures[field.name] for field in dataclasses.fields(TestFigures)}),
        fridge_test_found={name: figures["found_per_image"][name] for name in split.test if name in SAMPLE_NAMES},
        validation_map_50=summary.validation["map_50"],
        served={name: {"map": v["map"], "map_50": v["map_50"]} for name, v in served.items()},
        robustness=fold_robustness.measure(fp32, summary.served_threshold, test, fp32.class_map),
    )


def current_fingerprint(row: dict, work: Path) -> str | None:
    """What a results.json row's (mode, model, seed, fold) would train today (TrainConfig.fingerprint),
    None if unknown. It reads the stored record, which may be of another format."""
    short = {name: short for short, name in SHORT_NAMES.items()}.get(row.get("model"))
    if short is None or row.get("mode") not in ("quick", "full") or not isinstance(row.get("seed"), int):
        return None
    return train_config(row["mode"], short, row["seed"], work, row.get("fold", 0)).fingerprint()


def _todays_rows(results_path: Path, work: Path) -> list[AccuracyRow]:
    """results.json's rows that describe today's training; the others are dropped, said so."""
    records = json.loads(results_path.read_text()) if results_path.is_file() else []
    fields = {f.name for f in dataclasses.fields(AccuracyRow)}
    fresh = [r for r in records if set(r) == fields and r.get("config_hash") == current_fingerprint(r, work)]
    if len(fresh) < len(records):  # another recipe, code version or format: not today's training
        print(
            f"dropping {len(records) - len(fresh)} result(s) of another configuration from {results_path}", flush=True
        )
    return [AccuracyRow.from_json(r) for r in fresh]


def _integers(parser: argparse.ArgumentParser, name: str, text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        parser.error(f"--{name}: expected comma-separated integers, got {text!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers accuracy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs",
        default="quick:lite0,full:lite0",
        help="comma-separated mode:model, mode in quick|full, model in " + "|".join(SHORT_NAMES),
    )
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    parser.add_argument("--folds", default="0,1,2,3,4", help="comma-separated folds (the test part of each)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md")
    parser.add_argument("--readme", type=Path, default=PROJECT_ROOT / "README.md", help="its accuracy lines")
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite the tables from results.json; train and measure nothing"
    )
    args = parser.parse_args(argv)
    runs = [tuple(item.split(":")) for item in args.runs.split(",")]
    if any(len(r) != 2 or r[0] not in ("quick", "full") or r[1] not in SHORT_NAMES for r in runs):
        parser.error(f"--runs: expected mode:model pairs like quick:lite0, got {args.runs!r}")
    seeds, folds = _integers(parser, "seeds", args.seeds), _integers(parser, "folds", args.folds)
    if any(not 0 <= f < TrainConfig.folds for f in folds):
        parser.error(f"--folds: each fold must be in 0..{TrainConfig.folds - 1}, got {args.folds!r}")
    torch.set_num_threads(2)
    work = ACCURACY_DIR
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    rows = _todays_rows(results_path, work)
    for mode, model in [] if args.tables_only else runs:
        for seed in seeds:
            for fold in folds:
                started = time.perf_counter()
                row = measure_run(mode, model, seed, fold, work)
                rows = [r for r in rows if (r.mode, r.model, r.seed, r.fold) != (mode, row.model, seed, fold)] + [row]
                results_path.write_text(json.dumps([r.to_json() for r in rows], indent=2))
                print(
                    f"{mode} {model} seed {seed} fold {fold}: test mAP@.5 {row.test.shown('map_50')}, "
                    f"recall {row.test.shown('recall', 2)} / precision {row.test.shown('precision', 2)} "
                    f"at {row.test.threshold:.2f} ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    rows.sort(key=lambda r: (r.mode != "quick", r.model, r.seed != TrainConfig.seed, r.seed, r.fold))
    replace_section(args.out, SECTION, markdown(rows))  # BENCHMARKS.md's "training" section is this tool's
    if has_section(args.readme, README_SECTION):
        replace_section(args.readme, README_SECTION, headline(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
