"""Checkpoint -> self-describing ONNX model (parity: helpers.compare; INT8: helpers.quantize).

Contract of every exported model (also written into its metadata as `helpers.contract`):
  input  `images`  float32 [1, 3, S, S]: letterboxed + normalised exactly as training's valid transform
  output `boxes`   float32 [N, 4] xyxy in input pixels, after the model's own score threshold and NMS
  output `scores`  float32 [N]
  output `labels`  int64   [N], 1..C (0 is background and never returned)

CLI: python -m helpers.export [CHECKPOINT] [--out MODEL.onnx]   (defaults: this mode's artefacts,
helpers.paths: artifacts/<mode>/train/best.ckpt -> artifacts/<mode>/model.onnx, where helpers.deploy looks)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import warnings
from pathlib import Path

import onnx
import torch

from helpers.models import set_serving_thresholds
from helpers.paths import run_artifacts
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import PreprocessConfig
from helpers.runtime.model import CONTRACT, META_PREFIX, OUTPUT_NAMES

OPSET = 17
MIN_SCORE = 0.01


class _ExportWrapper(torch.nn.Module):
    """Batch-of-one tensor in, named (boxes, scores, labels) out: torchvision returns a dict whose
    order is boxes, labels, scores, so outputs are picked by name, never by position."""

    def __init__(self, detector: torch.nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor):
        out = self.detector([images[0]])[0]
        return out["boxes"], out["scores"], out["labels"]


def export_onnx(
    detector: torch.nn.Module,
    path: str | Path,
    class_map: ClassMap,
    preprocess: PreprocessConfig,
    model_name: str,
    weights_used: str,
    min_score: float = MIN_SCORE,
    data_used: str = "unknown",
    training_run: str = "unknown",
    score_threshold: float | None = None,
) -> Path:
    """Export with opset 17 through the TorchScript exporter (dynamo=False: the dynamo exporter
    fails on torchvision's batched NMS), check it, and write the metadata the runtime reads.

    The graph keeps detections down to `min_score` (the detector is changed in place) so that the
    serving threshold, not a value frozen at export, decides what users see. `score_threshold`, the
    threshold training chose on unseen images, is recorded as metadata "score_threshold": the
    handler's default.
    """
    set_serving_thresholds(detector, min_score)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = preprocess.image_size
    example = torch.zeros(1, 3, size, size)
    wrapper = _ExportWrapper(detector).eval()  # the exporter restores the wrapper's mode afterwards
    # torchvision detectors trigger dozens of TracerWarnings that are expected for a fixed input
    # size; the parity check below is what proves the trace right.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            opset_version=OPSET,
            dynamo=False,
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "detections"} for name in OUTPUT_NAMES},
        )
    model = onnx.load(str(path))
    metadata = {
        "preprocess": preprocess.to_json(),
        "classes": json.dumps(list(class_map.names)),
        "model_name": model_name,
        "weights": weights_used,
        "data": data_used,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "contract": CONTRACT,
        "min_score": str(min_score),
        "training_run": training_run,  # the training configuration's fingerprint (TrainConfig.fingerprint)
    }
    if score_threshold is not None:
        metadata["score_threshold"] = str(score_threshold)
    write_metadata(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def write_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        full_key = META_PREFIX + key
        entry = existing.get(full_key) or model.metadata_props.add()
        entry.key, entry.value = full_key, value


def export_checkpoint(checkpoint: str | Path, out: str | Path, min_score: float = MIN_SCORE) -> Path:
    from helpers.train import load_checkpoint

    module = load_checkpoint(checkpoint)
    return export_onnx(
        module.model,
        out,
        module.class_map,
        module.preprocess,
        module.hparams.model_name,
        module.hparams.weights_used,
        min_score,
        module.hparams.get("data_used", "unknown"),
        module.hparams.get("training_run", "unknown"),
        module.hparams.get("score_threshold"),
    )


def recorded(model_path: str | Path, key: str) -> str | None:
    """What an exported (or quantised) model records under `key` in its metadata, None if nothing."""
    model = onnx.load(str(model_path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == META_PREFIX + key), None)


def training_run_of(model_path: str | Path) -> str | None:
    """The training fingerprint an exported (or quantised) model records, None if it has none."""
    return recorded(model_path, "training_run")


def build_parser() -> argparse.ArgumentParser:
    layout = run_artifacts()
    parser = argparse.ArgumentParser(description="Export a training checkpoint to ONNX.")
    parser.add_argument("checkpoint", nargs="?", type=Path, default=layout.checkpoint)
    parser.add_argument("--out", type=Path, default=layout.onnx)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.checkpoint).is_file():
        print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    path = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
