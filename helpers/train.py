"""Training: IceVision's recipe (RetinaNet/Faster R-CNN, aug_tfms, COCO mAP) on Lightning.

CLI: python -m helpers.train --model retinanet_resnet50_fpn --epochs 20 --out artifacts/train
Quick mode (HELPERS_QUICK=1 or --quick) trains the small model on a tiny set for CI.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from helpers import data as fridge_data
from helpers.config import FRIDGE_CLASSES, PREPROCESS, PreprocessConfig
from helpers.metrics import mean_average_precision, new_metric, summarize
from helpers.models import BLOG_MODEL, MODEL_NAMES, SMALL_MODEL, build_detector
from helpers.runtime.classmap import ClassMap
from helpers.runtime.preprocess import decode_image
from helpers.synthetic import make_synthetic_voc
from helpers.transforms import train_transform, valid_transform

ARTIFACTS = fridge_data.PROJECT_ROOT / "artifacts"
MONITOR = "val_real/map"


def quick_mode() -> bool:
    """HELPERS_QUICK=1: tiny data and epochs so notebooks and CI finish in minutes."""
    return os.environ.get("HELPERS_QUICK", "0") not in ("", "0", "false", "False")


class DetectionDataset(Dataset):
    """Records -> (float32 CHW tensor, torchvision target) through an albumentations transform.

    Images are decoded with the serving decoder (Pillow, EXIF-aware) so train and serve see the same
    pixels before the transform.
    """

    def __init__(self, records, transform, class_map: ClassMap):
        self.records, self.transform, self.class_map = list(records), transform, class_map

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        image = decode_image(record.image_path.read_bytes(), max_pixels=1 << 40)
        out = self.transform(
            image=image,
            bboxes=np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4),
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
        model_name: str = BLOG_MODEL,
        class_names: tuple[str, ...] = FRIDGE_CLASSES,
        preprocess_json: str = PREPROCESS.to_json(),
        weights: str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 20,
        weights_used: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_map = ClassMap(class_names)
        self.preprocess = PreprocessConfig.from_json(preprocess_json)
        self.model, used = build_detector(
            model_name, self.class_map.num_classes, self.preprocess.image_size, weights
        )
        # A reloaded checkpoint is built with weights="none": keep the record of the original.
        self.hparams["weights_used"] = weights_used or used
        self.metrics = torch.nn.ModuleList([new_metric(), new_metric()])

    def forward(self, images):
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        images, targets = batch
        self.metrics[dataloader_idx].update(self.model(images), targets)

    def on_validation_epoch_end(self):
        for prefix, metric in zip(("val_real", "val_synthetic"), self.metrics):
            if metric.detection_box:  # a dataloader that yielded nothing has nothing to compute
                for key, value in summarize(metric, self.class_map.names).items():
                    self.log(f"{prefix}/{key}", value, prog_bar=key == "map")
            metric.reset()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, self.hparams.max_epochs)
        )
        return [optimizer], [schedule]


def load_checkpoint(path: str | Path) -> DetectorModule:
    """Reload for inference/export: never downloads weights, the state dict holds them all."""
    module = DetectorModule.load_from_checkpoint(str(path), map_location="cpu", weights="none")
    return module.eval()


@torch.no_grad()
def predict(module: DetectorModule, records, batch_size: int = 4):
    """Eager predictions on records through the valid transform, boxes in letterboxed pixels,
    plus the targets in the same space (the form torchmetrics wants)."""
    dataset = DetectionDataset(records, valid_transform(module.preprocess), module.class_map)
    predictions, targets = [], []
    module.eval()
    for images, batch_targets in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        predictions += module(images)
        targets += batch_targets
    return predictions, targets


def evaluate(module: DetectorModule, records) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5 and per-class AP of a trained module on records."""
    predictions, targets = predict(module, records)
    return mean_average_precision(predictions, targets, module.class_map.names)


@dataclasses.dataclass
class TrainConfig:
    model: str = BLOG_MODEL
    weights: str = "auto"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    n_synthetic: int = 300
    valid_fraction: float = 0.3
    data_dir: str | None = None  # VOC folder with images/ + annotations/; None = bundled sample
    out_dir: str = str(ARTIFACTS / "train")
    seed: int = 42
    threads: int = 0  # 0 = all CPUs

    @classmethod
    def quick(cls, **overrides) -> TrainConfig:
        settings = dict(model=SMALL_MODEL, epochs=2, batch_size=4, n_synthetic=16)
        settings.update(overrides)
        return cls(**settings)


def prepare_data(config: TrainConfig):
    """-> (train records, real valid records, synthetic valid records). Synthetic files are
    regenerated under out_dir/synthetic (deterministic by seed)."""
    if config.data_dir:
        root = Path(config.data_dir)
        real = fridge_data.parse_voc(root / "annotations", root / "images")
    else:
        real = fridge_data.load_sample()
    real_train, real_valid = fridge_data.split(real, config.valid_fraction, config.seed)
    synthetic_dir = Path(config.out_dir) / "synthetic"
    n_synthetic_valid = config.n_synthetic // 10
    synthetic = make_synthetic_voc(
        synthetic_dir, config.n_synthetic + n_synthetic_valid, seed=config.seed
    )
    synthetic_train = synthetic[: config.n_synthetic]
    synthetic_valid = synthetic[config.n_synthetic :]
    return real_train + synthetic_train, real_valid, synthetic_valid


def train(config: TrainConfig) -> dict:
    """Train, keep the best checkpoint by real-valid mAP, write class_map.json and summary.json."""
    if config.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; choose from {MODEL_NAMES}")
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(config.seed, workers=True, verbose=False)
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    class_map = ClassMap(FRIDGE_CLASSES)
    train_records, real_valid, synthetic_valid = prepare_data(config)
    loaders = dict(batch_size=config.batch_size, collate_fn=collate, num_workers=0)
    train_loader = DataLoader(
        DetectionDataset(train_records, train_transform(PREPROCESS), class_map), shuffle=True, **loaders
    )
    valid_loaders = [
        DataLoader(DetectionDataset(records, valid_transform(PREPROCESS), class_map), **loaders)
        for records in (real_valid, synthetic_valid)
        if records
    ]
    module = DetectorModule(
        config.model, class_map.names, PREPROCESS.to_json(), config.weights, config.lr,
        max_epochs=config.epochs,
    )
    checkpoint = ModelCheckpoint(
        dirpath=out_dir, filename="best", monitor=MONITOR, mode="max", enable_version_counter=False
    )
    trainer = L.Trainer(
        max_epochs=config.epochs,
        accelerator="cpu",
        logger=CSVLogger(out_dir, name="logs", version=0),
        callbacks=[checkpoint],
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        deterministic=False,
    )
    started = time.perf_counter()
    trainer.fit(module, train_loader, valid_loaders)
    seconds = time.perf_counter() - started
    (out_dir / "class_map.json").write_text(class_map.to_json())
    best = load_checkpoint(checkpoint.best_model_path)
    summary = {
        "model": config.model,
        "weights_used": best.hparams.weights_used,
        "checkpoint": str(Path(checkpoint.best_model_path).resolve()),
        "best_epoch": _best_epoch(out_dir),
        "best_val_real_map": float(checkpoint.best_model_score or 0.0),
        "epochs": config.epochs,
        "seconds": round(seconds, 1),
        "seconds_per_epoch": round(seconds / max(1, config.epochs), 1),
        "n_train": len(train_records),
        "n_valid_real": len(real_valid),
        "n_valid_synthetic": len(synthetic_valid),
        "metrics_csv": str((out_dir / "logs" / "version_0" / "metrics.csv").resolve()),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _best_epoch(out_dir: Path) -> int | None:
    checkpoint = torch.load(out_dir / "best.ckpt", map_location="cpu", weights_only=False)
    return checkpoint.get("epoch")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", choices=MODEL_NAMES)
    parser.add_argument("--weights", choices=("auto", "DEFAULT", "none"))
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--synthetic", type=int, dest="n_synthetic")
    parser.add_argument("--data-dir", help="VOC folder (images/, annotations/); default: bundled sample")
    parser.add_argument("--out", dest="out_dir")
    parser.add_argument("--quick", action="store_true", help="tiny run (also HELPERS_QUICK=1)")
    args = vars(parser.parse_args(argv))
    quick = args.pop("quick") or quick_mode()
    overrides = {k: v for k, v in args.items() if v is not None}
    config = TrainConfig.quick(**overrides) if quick else TrainConfig(**overrides)
    try:
        summary = train(config)
    except (ValueError, FileNotFoundError, fridge_data.AnnotationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
