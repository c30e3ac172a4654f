"""Idempotent steps that make each artefact of the series if it is missing (layout: helpers.paths).

Every notebook starts from these, so any notebook runs on its own (it builds what earlier notebooks
would have) and `python -m helpers run-all` reuses what exists. Quick mode (HELPERS_QUICK=1) and full
mode write to different folders: artifacts/quick and artifacts/full (override: HELPERS_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers.data import Split
from helpers.paths import RunArtifacts, quick_mode, run_artifacts
from helpers.train import TrainConfig


def artifacts() -> RunArtifacts:
    """This mode's artefact layout, its root folder created."""
    layout = run_artifacts()
    layout.root.mkdir(parents=True, exist_ok=True)
    return layout


def train_config() -> TrainConfig:
    """Quick: Lite0 on the sample, minutes. Full: the Fridge dataset (sample offline) and
    HELPERS_MODEL (default: the blog's RetinaNet with COCO weights if they download, else Lite0)."""
    out_dir = str(artifacts().train_dir)
    model = {"model": os.environ["HELPERS_MODEL"]} if os.environ.get("HELPERS_MODEL") else {}
    if quick_mode():
        return TrainConfig.quick(out_dir=out_dir, **model)
    return TrainConfig(out_dir=out_dir, **model)


def ensure_trained() -> dict:
    """The training summary (see helpers.train.train). Reuses an earlier run only if it was trained
    with this very configuration (and left its checkpoint and split); otherwise says why and trains again."""
    from helpers.train import train

    config = train_config()
    layout = artifacts()
    if layout.summary.is_file():
        summary = json.loads(layout.summary.read_text())
        if (
            summary.get("config") == config.as_record()
            and Path(summary["checkpoint"]).is_file()
            and layout.split.is_file()
        ):
            return summary
        print(f"note: {layout.summary} was trained with another configuration; training again", file=sys.stderr)
    return train(config)


def split() -> Split:
    """The trained run's split (training writes it next to the checkpoint)."""
    ensure_trained()
    return Split.read(artifacts().split)


def ensure_onnx() -> Path:
    from helpers.export import export_checkpoint

    path = artifacts().onnx
    if not path.is_file():
        export_checkpoint(ensure_trained()["checkpoint"], path)
    return path


def calibration_inputs(limit: int = 8):
    """Real preprocessed images for INT8 calibration: the run's real training images."""
    from helpers.runtime.preprocess import decode_image, preprocess

    return [preprocess(decode_image(r.image_path.read_bytes()))[0] for r in split().real("train")[:limit]]


def ensure_int8() -> Path:
    from helpers.quantize import quantize_int8

    path = artifacts().int8
    if not path.is_file():
        quantize_int8(ensure_onnx(), path, calibration_inputs())
    return path


def ensure_zip(arch: str = "x86_64") -> dict:
    """The Lambda zip (without a model: the model goes to S3) and its size report."""
    from helpers.package import build

    layout = artifacts()
    if layout.zip_report(arch).is_file() and layout.zip(arch).is_file():
        return json.loads(layout.zip_report(arch).read_text())
    return build(arch, "3.12", out_dir=layout.dist_dir)
