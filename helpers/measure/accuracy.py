"""What each model learns, measured: `python -m helpers accuracy [--runs quick:lite0,...] [--seeds 42,1,2]`.

For every (mode, model, seed) it trains (helpers.train.run.train, the same configuration `make run` or
full mode would use), then measures on the unseen real images of its split (hold-out object photos +
fridge validation images): COCO mAP / mAP@.5, recall and precision at the served threshold (the run's
own, chosen on those images), the fridge validation boxes found there (by image); the served ONNX
model FP32 against static INT8 through the Lambda's own Detector, calibrated on every training image
and on the SERVED_CALIBRATION_IMAGES (16, spread over them) that `make run` uses; and, as a secondary
figure, the synthetic hold-out. Each run is judged against the training targets (QUICK_* and FULL_*
in helpers.measure.targets), and the spread over seeds is given per (mode, model). Results accumulate in
artifacts/accuracy/results.json (a run replaces the same mode, model and seed; a result of another
recipe or code version is dropped, said so); the table goes into the "training" section of
BENCHMARKS.md, whose hand-written notes lie outside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from helpers.data import dataset as fridge_data
from helpers.measure.benchmark.results import Int8Accuracy
from helpers.measure.markdown import replace_section
from helpers.measure.targets import (
    FULL_MAX_CPU_MINUTES,
    FULL_MIN_MAP,
    FULL_MIN_MAP_50,
    MET,
    NOT_MET,
    QUICK_MAX_SECONDS,
    QUICK_MIN_MAP_50,
    QUICK_MIN_PRECISION,
    QUICK_MIN_RECALL,
    Goal,
    int8_accuracy_goal,
)
from helpers.paths import ACCURACY_DIR, PROJECT_ROOT, split_file
from helpers.pipeline.steps import SERVED_CALIBRATION_IMAGES
from helpers.train.config import TrainConfig
from helpers.train.models import LITE0_MODEL, SMALL_MODEL
from helpers.train.run import train
from helpers.train.summary import RunSummary

SHORT_NAMES = {"lite0": LITE0_MODEL, "small": SMALL_MODEL}
SAMPLE_NAMES = {f"{n}.jpg" for n in range(10, 16)}


@dataclasses.dataclass(frozen=True)
class Unseen:
    """A run's figures on its unseen real images: COCO mAP, and at its served threshold recall,
    precision, the boxes found and the false detections."""

    images: int
    boxes: int
    map: float
    map_50: float
    threshold: float
    recall: float
    precision: float
    found: int
    false: int


@dataclasses.dataclass(frozen=True)
class AccuracyRow:
    """One (mode, model, seed) run: its training, its unseen figures, the fridge validation boxes found
    (by image, "found/total"), the synthetic hold-out, and the served models' mAP (fp32, int8_all,
    int8_served -> map, map_50). A row of results.json."""

    mode: str
    model: str
    seed: int
    config_hash: str
    weights: str
    dataset: str
    train_seconds: float
    cpu_seconds: float
    epochs: int
    best_epoch: int
    n_train: int
    unseen: Unseen
    fridge_valid_found: dict[str, str]
    holdout_map_50: float | None
    served: dict[str, dict[str, float]]

    @classmethod
    def from_json(cls, record: dict) -> AccuracyRow:
        return cls(**{**record, "unseen": Unseen(**record["unseen"])})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def train_config(mode: str, model: str, seed: int, out_dir: Path) -> TrainConfig:
    """quick = what CI and `make run` train; full = full mode offline (the Fridge download fails
    here, so the sample; online it would be the 128 images)."""
    settings = dict(model=SHORT_NAMES[model], seed=seed, out_dir=str(out_dir))
    return TrainConfig.quick(**settings) if mode == "quick" else TrainConfig(**settings)


def measure_run(mode: str, model: str, seed: int, work: Path) -> AccuracyRow:
    out_dir = work / f"{mode}-{model}-{seed}"
    return measure_trained(mode, train(train_config(mode, model, seed, out_dir)), out_dir)


def measure_trained(mode: str, summary: RunSummary, out_dir: Path) -> AccuracyRow:
    """The figures of one finished training run (its summary.json; the split is read beside its
    checkpoint). out_dir receives the exported FP32 and INT8 models."""
    from helpers.evaluate.metrics import evaluate_detector
    from helpers.export.onnx_export import export_checkpoint
    from helpers.export.quantize import calibration_inputs, quantize_int8
    from helpers.runtime.model import Detector

    split = fridge_data.Split.read(split_file(Path(summary.checkpoint).parent))
    unseen = split.evaluation()
    fp32 = Detector(export_checkpoint(summary.checkpoint, out_dir / "model.onnx"), threads=2)
    served = {"fp32": evaluate_detector(fp32, unseen)}
    for name, limit in (("int8_all", None), ("int8_served", SERVED_CALIBRATION_IMAGES)):
        calibration = calibration_inputs(split, fp32.config, limit)  # the exported model's own contract
        path = quantize_int8(fp32.path, out_dir / f"model_{name}.onnx", calibration)
        served[name] = evaluate_detector(Detector(path, threads=2), unseen)
    figures = summary.unseen
    at = figures["at_served_threshold"]
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
        unseen=Unseen(
            images=figures["images"],
            boxes=figures["boxes"],
            map=figures["map"],
            map_50=figures["map_50"],
            threshold=figures["served_threshold"],
            recall=at["recall"],
            precision=at["precision"],
            found=at["found"],
            false=at["false"],
        ),
        fridge_valid_found={name: figures["found_per_image"][name] for name in split.valid if name in SAMPLE_NAMES},
        holdout_map_50=summary.synthetic_holdout_map_50,  # on the kept checkpoint
        served={name: {"map": v["map"], "map_50": v["map_50"]} for name, v in served.items()},
    )


def run_goals(row: AccuracyRow) -> list[Goal]:
    """The run against its mode's training targets; INT8 is judged as served (SERVED_CALIBRATION_IMAGES)."""
    u = row.unseen
    fridge = row.fridge_valid_found
    every_box = all(found.split("/")[0] == found.split("/")[1] for found in fridge.values())
    goals: list[Goal] = []
    if row.mode == "quick":
        goals += [
            (
                f"training <= {QUICK_MAX_SECONDS} s",
                f"{row.train_seconds:.0f} s",
                MET if row.train_seconds <= QUICK_MAX_SECONDS else NOT_MET,
            ),
            (
                f"mAP@.5 >= {QUICK_MIN_MAP_50}",
                f"{u.map_50:.3f}",
                MET if u.map_50 >= QUICK_MIN_MAP_50 else NOT_MET,
            ),
            (
                f"recall >= {QUICK_MIN_RECALL} and precision >= {QUICK_MIN_PRECISION}",
                f"{u.recall:.2f} / {u.precision:.2f}",
                MET if u.recall >= QUICK_MIN_RECALL and u.precision >= QUICK_MIN_PRECISION else NOT_MET,
            ),
        ]
    else:
        minutes = row.cpu_seconds / 60
        goals += [
            (
                f"training <= {FULL_MAX_CPU_MINUTES} CPU-min",
                f"{minutes:.1f}",
                MET if minutes <= FULL_MAX_CPU_MINUTES else NOT_MET,
            ),
            (
                f"mAP@.5 >= {FULL_MIN_MAP_50} and mAP >= {FULL_MIN_MAP}",
                f"{u.map_50:.3f} / {u.map:.3f}",
                MET if u.map_50 >= FULL_MIN_MAP_50 and u.map >= FULL_MIN_MAP else NOT_MET,
            ),
        ]
    goals.append(("every fridge validation box found", ", ".join(fridge.values()), MET if every_box else NOT_MET))
    int8 = Int8Accuracy({"unseen": u.images}, row.served["fp32"], row.served["int8_served"])
    goals.append(int8_accuracy_goal(row.model, int8))
    return goals


def _span(values, digits: int = 3) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _by_run(rows: list[AccuracyRow]) -> dict[tuple[str, str], list[AccuracyRow]]:
    """The rows grouped by (mode, model), in the order they first appear."""
    groups: dict[tuple[str, str], list[AccuracyRow]] = {}
    for r in rows:
        groups.setdefault((r.mode, r.model), []).append(r)
    return groups


def spread(rows: list[AccuracyRow]) -> list[str]:
    """min-max over the seeds of each (mode, model) measured with more than one seed."""
    lines = []
    for (mode, model), group in _by_run(rows).items():
        if len(group) < 2:
            continue
        lines.append(
            f"- {mode} {model}, seeds {', '.join(str(r.seed) for r in group)}: "
            f"train {_span([r.train_seconds for r in group], 0)} s, "
            f"unseen mAP {_span([r.unseen.map for r in group])}, "
            f"mAP@.5 {_span([r.unseen.map_50 for r in group])}, "
            f"served recall {_span([r.unseen.recall for r in group], 2)}, "
            f"precision {_span([r.unseen.precision for r in group], 2)}"
        )
    return lines


def current_fingerprint(row: dict, work: Path) -> str | None:
    """What a results.json row's (mode, model, seed) would train today (TrainConfig.fingerprint), None if
    unknown. It reads the stored record, which may be of another format."""
    short = {name: short for short, name in SHORT_NAMES.items()}.get(row.get("model"))
    if short is None or row.get("mode") not in ("quick", "full") or not isinstance(row.get("seed"), int):
        return None
    return train_config(row["mode"], short, row["seed"], work).fingerprint()


def runs_measured(rows: list[AccuracyRow]) -> str:
    """What the table holds, as "quick MODEL, seeds 42, 1, 2; full MODEL, seed 42"."""
    return "; ".join(
        f"{mode} {model}, seed{'s' if len(group) > 1 else ''} {', '.join(str(r.seed) for r in group)}"
        for (mode, model), group in _by_run(rows).items()
    )


def markdown(rows: list[AccuracyRow]) -> str:
    lines = [
        "## Training: what the models learn (`python -m helpers accuracy`)",
        "",
        f"Written by `python -m helpers accuracy` ({runs_measured(rows)}; 2 CPUs, 2 threads; *CPU min* is the",
        "process's CPU time over all its threads). Every run is judged on its",
        "*unseen* real images (split.json): the object photos held out of training (20% of each class, by",
        "photo, seeded) and the 2 fridge validation images. *served*: recall / precision at the run's served",
        "threshold (the best F1 on those images, written into the model's metadata), with the boxes found and",
        "the false detections; *fridge valid*: the fridge validation boxes found there (right label, IoU >= 0.5).",
        "INT8 is the project's recipe through the Lambda's Detector, calibrated on every training image, and in",
        f"brackets on {SERVED_CALIBRATION_IMAGES} of them spread over the list (what `make run` serves). The synthetic hold-out",
        "(composites of the hold-out photos) is secondary. With 30 boxes one box is 0.03 of recall and about",
        "3 points of mAP@.5.",
        "",
        "| mode | model | data | seed | train s (CPU min) | unseen mAP / @.5 | served thr: R / P (found, false) "
        "| fridge valid | unseen mAP@.5 FP32 / INT8 | unseen mAP FP32 / INT8 | synthetic hold-out mAP@.5 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        u, s = r.unseen, r.served
        holdout = f"{r.holdout_map_50:.3f}" if r.holdout_map_50 is not None else "-"
        fridge = ", ".join(f"{name} {found}" for name, found in r.fridge_valid_found.items())
        lines.append(
            f"| {r.mode} | {r.model} | {r.dataset} | {r.seed} "
            f"| {r.train_seconds:.0f} ({r.cpu_seconds / 60:.1f}) "
            f"| {u.map:.3f} / {u.map_50:.3f} ({u.images} images, {u.boxes} boxes) "
            f"| {u.threshold:.2f}: {u.recall:.2f} / {u.precision:.2f} ({u.found}, {u.false}) "
            f"| {fridge} "
            f"| {s['fp32']['map_50']:.3f} / {s['int8_all']['map_50']:.3f} ({s['int8_served']['map_50']:.3f}) "
            f"| {s['fp32']['map']:.3f} / {s['int8_all']['map']:.3f} ({s['int8_served']['map']:.3f}) "
            f"| {holdout} |"
        )
    lines += ["", "Spread over seeds:", "", *(spread(rows) or ["- one seed per run so far"]), ""]
    lines += ["Training targets, per run:", "", "| run | goal | measured | met |", "|---|---|---|---|"]
    for r in rows:
        for goal, figure, status in run_goals(r):
            lines.append(f"| {r.mode} {r.model} seed {r.seed} | {goal} | {figure} | {status} |")
    return "\n".join(lines)


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
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    runs = [tuple(item.split(":")) for item in args.runs.split(",")]
    if any(len(r) != 2 or r[0] not in ("quick", "full") or r[1] not in SHORT_NAMES for r in runs):
        parser.error(f"--runs: expected mode:model pairs like quick:lite0, got {args.runs!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    torch.set_num_threads(2)
    work = ACCURACY_DIR
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    rows = _todays_rows(results_path, work)
    for mode, model in runs:
        for seed in seeds:
            started = time.perf_counter()
            row = measure_run(mode, model, seed, work)
            rows = [r for r in rows if (r.mode, r.model, r.seed) != (mode, row.model, seed)] + [row]
            results_path.write_text(json.dumps([r.to_json() for r in rows], indent=2))
            print(
                f"{mode} {model} seed {seed}: unseen mAP@.5 {row.unseen.map_50:.3f}, "
                f"recall {row.unseen.recall:.2f} / precision {row.unseen.precision:.2f} "
                f"at {row.unseen.threshold:.2f} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    rows.sort(key=lambda r: (r.mode != "quick", r.model, r.seed != TrainConfig.seed, r.seed))
    replace_section(args.out, "training", markdown(rows))  # BENCHMARKS.md's "training" section is this tool's
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
