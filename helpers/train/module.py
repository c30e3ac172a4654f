"""The LightningModule: the detector, its training and validation steps, its optimizer (two parameter
groups) and learning-rate schedule; and the record of the run a checkpoint comes from."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import lightning as L
import torch

from helpers.evaluate.metrics import new_metric, summarize
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS, PreprocessConfig
from helpers.train.models import LITE0_MODEL, build_detector

#: Checkpoint selection: COCO mAP on the unseen real images (with the sample: the hold-out object
#: photos and the 2 fridge validation images), from the middle epoch on (ValidateFromMiddleEpoch);
#: ties go to the later epoch (BestCheckpoint). The synthetic hold-out is a secondary figure,
#: evaluated once on the kept checkpoint.
MONITOR = "val/selection"

#: The optimizer's two parameter groups, by name (kept in the saved optimizer state).
BODY_GROUP, HEADS_GROUP = "backbone body", "FPN and heads"

#: The checkpoint's key for its RunRecord (beside Lightning's "hyper_parameters", which build the model).
RUN_RECORD_KEY = "run_record"


@dataclasses.dataclass
class RunRecord:
    """What a checkpoint says about the run it comes from, and export writes into the ONNX metadata."""

    weights_used: str  # the pretrained weights the model started from
    data_used: str = "unknown"  # the data source's description
    training_run: str = "unknown"  # the training configuration's fingerprint (TrainConfig.fingerprint)
    score_threshold: float | None = None  # the served threshold, chosen after training (helpers.train.threshold)


class DetectorModule(L.LightningModule):
    """Its hyperparameters are what builds the detector and its optimizer; `run` records the run."""

    def __init__(
        self,
        model_name: str = LITE0_MODEL,
        class_names: tuple[str, ...] = FRIDGE_CLASSES,
        preprocess_json: str = PREPROCESS.to_json(),
        weights: str = "auto",
        lr: float = 1e-3,
        head_lr_factor: float = 1.0,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.class_map = ClassMap(class_names)
        self.preprocess = PreprocessConfig.from_json(preprocess_json)
        self.model, used = build_detector(model_name, self.class_map.num_classes, self.preprocess.image_size, weights)
        self.run = RunRecord(weights_used=used)  # a reloaded checkpoint replaces it with the saved one
        self.metric = new_metric()  # the unseen real images, at each validated epoch

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[RUN_RECORD_KEY] = dataclasses.asdict(self.run)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run = RunRecord(**checkpoint[RUN_RECORD_KEY])

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


def load_checkpoint(path: str | Path) -> DetectorModule:
    """Reload for inference/export: never downloads weights, the state dict holds them all."""
    module = DetectorModule.load_from_checkpoint(str(path), map_location="cpu", weights="none")
    return module.eval()


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
    ImageNet-pretrained; 1.0 for the torchvision models, whose FPN and heads come pretrained from COCO
    along with the body (or, offline, nothing is pretrained)."""
    if config_factor is not None:
        return config_factor
    return 0.5 if model_name == LITE0_MODEL else 1.0


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning rate at `step` as a fraction of the configured one: linear warm-up, then cosine to 0."""
    warmup = min(warmup_steps, total_steps - 1)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
