"""Where the series keeps its artefacts, and idempotent steps that make each one if it is missing.

Every notebook starts from these, so any notebook runs on its own (it builds what earlier notebooks
would have) and `python -m helpers run-all` reuses what exists. Quick mode (HELPERS_QUICK=1) and full
mode write to different folders: artifacts/quick and artifacts/full (override: HELPERS_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from helpers.data import PROJECT_ROOT
from helpers.train import TrainConfig, quick_mode


def artifacts_dir() -> Path:
    default = PROJECT_ROOT / "artifacts" / ("quick" if quick_mode() else "full")
    path = Path(os.environ.get("HELPERS_ARTIFACTS", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def train_config() -> TrainConfig:
    """Quick: Lite0 on the sample, minutes. Full: the Fridge dataset (sample offline) and
    HELPERS_MODEL (default: the blog's RetinaNet with COCO weights if they download, else Lite0)."""
    out_dir = str(artifacts_dir() / "train")
    model = {"model": os.environ["HELPERS_MODEL"]} if os.environ.get("HELPERS_MODEL") else {}
    if quick_mode():
        return TrainConfig.quick(out_dir=out_dir, **model)
    return TrainConfig(out_dir=out_dir, **model)


def ensure_trained() -> dict:
    """The training summary (see helpers.train.train). Reuses an earlier run only if it was trained
    with this very configuration; otherwise says why and trains again."""
    from helpers.train import train

    config = train_config()
    summary_path = artifacts_dir() / "train" / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("config") == config.as_record() and Path(summary["checkpoint"]).is_file():
            return summary
        print(f"note: {summary_path} was trained with another configuration; training again", file=sys.stderr)
    return train(config)


def ensure_onnx() -> Path:
    from helpers.export import export_checkpoint

    path = artifacts_dir() / "model.onnx"
    if not path.is_file():
        export_checkpoint(ensure_trained()["checkpoint"], path)
    return path


def calibration_inputs(limit: int = 8):
    """Real preprocessed images for INT8 calibration: the real training images of the run."""
    from helpers.runtime.preprocess import decode_image, preprocess

    data = ensure_trained()["data"]
    paths = [Path(data["root"]) / "images" / name for name in data["train_real_images"][:limit]]
    return [preprocess(decode_image(path.read_bytes()))[0] for path in paths]


def ensure_int8() -> Path:
    from helpers.export import quantize_int8

    path = artifacts_dir() / "model_int8.onnx"
    if not path.is_file():
        quantize_int8(ensure_onnx(), path, calibration_inputs())
    return path


def ensure_zip(arch: str = "x86_64") -> dict:
    """The Lambda zip (without a model: the model goes to S3) and its size report."""
    from helpers.package import build

    out_dir = artifacts_dir() / "dist"
    report_path = out_dir / f"lambda-{arch}.json"
    if report_path.is_file() and (out_dir / f"lambda-{arch}.zip").is_file():
        return json.loads(report_path.read_text())
    return build(arch, "3.12", out_dir=out_dir)
