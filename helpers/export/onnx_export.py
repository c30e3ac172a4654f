"""Checkpoint -> self-describing ONNX model (parity: helpers.export.compare; INT8: helpers.export.quantize).

Every exported model carries its contract (helpers.runtime.contract.ModelContract: input name and
shape, output names, preprocessing, classes, served threshold) in its metadata, with its provenance,
and is saved only once validated against it (save_validated; quantize uses it too).

CLI: python -m helpers export [CHECKPOINT] [--out MODEL.onnx] [--full]   (defaults: this mode's artefacts,
helpers.paths: artifacts/<mode>/train/best.ckpt -> artifacts/<mode>/model.onnx, where helpers.aws.deploy looks)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from helpers.export.serving_graph import SERVING_GRAPH, ServingGraph, apply_proposals, tracing_merge
from helpers.paths import not_found, run_artifacts
from helpers.provenance import EXPORT_CODE, code_digests
from helpers.runtime.contract import META_PREFIX, ModelContract
from helpers.runtime.model import Detector, ModelError
from helpers.train.models import set_serving_thresholds

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
    contract: ModelContract,
    model_name: str,
    weights_used: str,
    min_score: float = MIN_SCORE,
    data_used: str = "unknown",
    training_run: str = "unknown",
    graph: ServingGraph = SERVING_GRAPH,
) -> Path:
    """Export with opset 17 through the TorchScript exporter (dynamo=False: the dynamo exporter
    fails on torchvision's batched NMS), write the metadata the runtime reads, and validate it
    (save_validated).

    The graph keeps detections down to `min_score` (the detector is changed in place) so that the
    serving threshold, not a value frozen at export, decides what users see; the contract's
    score_threshold (chosen on the validation images after training) is the handler's default. `graph`:
    the proposal count and level merge served (helpers.export.serving_graph), also set in place.
    """
    prepare_for_serving(detector, min_score, graph)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(*contract.input_shape)
    wrapper = _ExportWrapper(detector).eval()  # the exporter restores the wrapper's mode afterwards
    # torchvision detectors trigger dozens of TracerWarnings that are expected for a fixed input
    # size; parity with PyTorch (helpers.export.compare.parity) is what proves the trace right.
    with torch.no_grad(), warnings.catch_warnings(), tracing_merge(graph):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            opset_version=OPSET,
            dynamo=False,
            input_names=[contract.input_name],
            output_names=list(contract.output_names),
            dynamic_axes={name: {0: "detections"} for name in contract.output_names},
        )
    model = onnx.load(str(path))
    metadata = {
        **contract.to_metadata(),
        "model_name": model_name,
        "weights": weights_used,
        "data": data_used,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "min_score": str(min_score),
        "serving_graph": graph.describe(),
        "training_run": training_run,  # the training configuration's fingerprint (TrainConfig.fingerprint)
        "code": json.dumps(code_digests(EXPORT_CODE), sort_keys=True),  # the export code it was made by
    }
    write_metadata(model, metadata)
    save_validated(model, path, contract)
    return path


def prepare_for_serving(
    detector: torch.nn.Module, min_score: float = MIN_SCORE, graph: ServingGraph = SERVING_GRAPH
) -> torch.nn.Module:
    """The eager model computing what its exported graph computes (changed in place, returned):
    detections kept down to `min_score`, the graph's proposal count. Parity is judged against it."""
    set_serving_thresholds(detector, min_score)
    apply_proposals(detector, graph)
    return detector


def save_validated(model: onnx.ModelProto, path: Path, contract: ModelContract) -> None:
    """Save an exported (or quantised) model only as a valid one, as optimum's exporters follow every
    export with its validation: the ONNX checker before saving; then the contract read back from the
    file, the graph's input and outputs (checked by the runtime's Detector at load) and one ONNX Runtime
    run on a seeded noise input, whose outputs must have the contract's shapes and types (noise, not a
    blank image: an untrained graph may propose nothing for a blank one, and torchvision's exported
    heads cannot reshape zero proposals). A model that fails is removed. Numerical parity with PyTorch
    is helpers.export.compare.parity (the tests run it)."""
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    try:
        if read_contract(path) != contract:
            raise ValueError(f"{path}: the metadata does not read back as the contract it was written from")
        detector = Detector(path, threads=1)
        noise = np.random.default_rng(0).standard_normal(contract.input_shape).astype(np.float32)
        boxes, scores, labels = detector.session.run(detector.output_names, {detector.input_name: noise})
        n = len(scores)
        typed = (boxes.dtype, scores.dtype, labels.dtype) == (np.float32, np.float32, np.int64)
        if not (typed and boxes.shape == (n, 4) and scores.shape == labels.shape == (n,)):
            raise ValueError(
                f"{path}: outputs {boxes.dtype}{list(boxes.shape)}, {scores.dtype}{list(scores.shape)}, "
                f"{labels.dtype}{list(labels.shape)}; the contract is {contract.describe()}"
            )
    except (ValueError, ModelError):
        path.unlink(missing_ok=True)
        raise


def write_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        full_key = META_PREFIX + key
        entry = existing.get(full_key) or model.metadata_props.add()
        entry.key, entry.value = full_key, value


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, min_score: float = MIN_SCORE, graph: ServingGraph = SERVING_GRAPH
) -> Path:
    from helpers.train.module import load_checkpoint

    module = load_checkpoint(checkpoint)
    run = module.run  # the checkpoint's RunRecord
    return export_onnx(
        module.model,
        out,
        ModelContract(module.class_map, module.preprocess, score_threshold=run.score_threshold),
        module.hparams.model_name,
        run.weights_used,
        min_score,
        run.data_used,
        run.training_run,
        graph,
    )


def read_metadata(model_path: str | Path) -> dict[str, str]:
    """Everything an exported (or quantised) model records, keys without META_PREFIX."""
    model = onnx.load(str(model_path), load_external_data=False)
    return {p.key.removeprefix(META_PREFIX): p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def read_contract(model_path: str | Path) -> ModelContract:
    return ModelContract.from_metadata(read_metadata(model_path))


def recorded(model_path: str | Path, key: str) -> str | None:
    """What an exported (or quantised) model records under `key` in its metadata, None if nothing."""
    return read_metadata(model_path).get(key)


def training_run_of(model_path: str | Path) -> str | None:
    """The training fingerprint an exported (or quantised) model records, None if it has none."""
    return recorded(model_path, "training_run")


def build_parser(full: bool = False) -> argparse.ArgumentParser:
    """Defaults from this mode's artefacts (helpers.paths): quick, or full with --full."""
    layout = run_artifacts(quick=False if full else None)
    parser = argparse.ArgumentParser(description="Export a training checkpoint to ONNX.")
    parser.add_argument("checkpoint", nargs="?", type=Path, default=layout.checkpoint)
    parser.add_argument("--out", type=Path, default=layout.onnx)
    parser.add_argument("--full", action="store_true", help="full mode's artefacts (default: quick, as `make run`)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(full="--full" in argv).parse_args(argv)
    if not Path(args.checkpoint).is_file():
        print(f"error: {not_found('checkpoint', args.checkpoint)}", file=sys.stderr)
        return 2
    path = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
