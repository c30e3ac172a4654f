"""Checkpoint -> self-describing ONNX model, parity against PyTorch, static INT8 quantisation.

Contract of every exported model (also written into its metadata as `helpers.contract`):
  input  `images`  float32 [1, 3, S, S]: letterboxed + normalised exactly as training's valid transform
  output `boxes`   float32 [N, 4] xyxy in input pixels, after the model's own score threshold and NMS
  output `scores`  float32 [N]
  output `labels`  int64   [N], 1..C (0 is background and never returned)

CLI: python -m helpers.export artifacts/train/best.ckpt --out artifacts/model.onnx
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torchvision.ops import box_iou

from helpers.config import PreprocessConfig
from helpers.models import set_serving_thresholds
from helpers.runtime.classmap import BACKGROUND, ClassMap
from helpers.runtime.model import CONTRACT, META_PREFIX, OUTPUT_NAMES, Detector

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
) -> Path:
    """Export with opset 17 through the TorchScript exporter (dynamo=False: the dynamo exporter
    fails on torchvision's batched NMS), check it, and write the metadata the runtime reads.

    The graph keeps detections down to `min_score` (the detector is changed in place) so that the
    serving threshold, not a value frozen at export, decides what users see.
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
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "contract": CONTRACT,
        "min_score": str(min_score),
    }
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
    )


BOX_TOLERANCE_PX = 1e-2  # parity targets: ONNX Runtime vs PyTorch, per paired detection
SCORE_TOLERANCE = 1e-4
TIE_SCORE = 1e-4  # scores closer than this may legitimately rank or suppress differently
TAIL = 0.01  # relative score band above the weakest kept detection of a full (capped) output


def greedy_pairs(cost: np.ndarray, limit: float):
    """One-to-one pairs (i, j) with cost[i, j] <= limit, cheapest first. Returns (pairs, unmatched rows,
    unmatched columns)."""
    pairs, used_rows, used_cols = [], set(), set()
    for flat in np.argsort(cost, axis=None, kind="stable"):
        i, j = (int(v) for v in np.unravel_index(flat, cost.shape))
        if cost[i, j] > limit:
            break
        if i not in used_rows and j not in used_cols:
            pairs.append((i, j))
            used_rows.add(i)
            used_cols.add(j)
    return pairs, [i for i in range(cost.shape[0]) if i not in used_rows], [j for j in range(cost.shape[1]) if j not in used_cols]


def match_detections(a: dict, b: dict, max_distance: float):
    """One-to-one pairs of same-label detections whose boxes agree within `max_distance` px (L-inf),
    closest first. Returns (pairs [(i, j)], unmatched indices in a, unmatched indices in b)."""
    if len(a["boxes"]) == 0 or len(b["boxes"]) == 0:
        return [], list(range(len(a["boxes"]))), list(range(len(b["boxes"])))
    distance = np.abs(np.asarray(a["boxes"])[:, None, :] - np.asarray(b["boxes"])[None, :, :]).max(axis=2)
    distance[np.asarray(a["labels"])[:, None] != np.asarray(b["labels"])[None, :]] = np.inf
    return greedy_pairs(distance, max_distance)


def tie_explained(index: int, side: dict, other: dict, at_cap: bool) -> bool:
    """An unmatched detection is a tie, not a disagreement, when its score is within 1% of the weakest
    detection of a full (capped) output — near-equal scores upstream (RPN top-k, NMS) decide what makes
    the cut — or when the other side kept an overlapping same-label box with a score within 1% instead
    (NMS twins: a barely trained model scores whole clusters alike, so tiny upstream differences change
    which member survives suppression)."""
    score = side["scores"][index]
    if at_cap and score <= side["scores"].min() * (1 + TAIL) + TIE_SCORE:
        return True
    if len(other["boxes"]) == 0:
        return False
    iou = box_iou(torch.as_tensor(side["boxes"][index : index + 1]), torch.as_tensor(other["boxes"])).numpy()[0]
    near_equal = np.abs(other["scores"] - score) <= max(TIE_SCORE, TAIL * score)
    twins = (iou > 0.5) & near_equal & (other["labels"] == side["labels"][index])
    return bool(twins.any())


def _above(out: dict, threshold: float) -> dict:
    keep = np.asarray(out["scores"]) >= threshold
    return {k: np.asarray(v)[keep] for k, v in out.items()}


def compare_detections(reference: dict, candidate: dict, max_detections: int) -> dict:
    """Pairs, ties, unexplained leftovers and max box/score differences of `candidate` vs `reference`."""
    pairs, only_ref, only_cand = match_detections(reference, candidate, BOX_TOLERANCE_PX)
    ref_cap, cand_cap = len(reference["scores"]) >= max_detections, len(candidate["scores"]) >= max_detections
    ties = sum(tie_explained(i, reference, candidate, ref_cap) for i in only_ref)
    ties += sum(tie_explained(j, candidate, reference, cand_cap) for j in only_cand)
    most = max(len(reference["scores"]), len(candidate["scores"]))
    return {
        "matched": len(pairs),
        "ties": ties,
        "unmatched": len(only_ref) + len(only_cand) - ties,
        "paired_fraction": len(pairs) / most if most else 1.0,
        "box_max_abs_diff": float(max((np.abs(reference["boxes"][i] - candidate["boxes"][j]).max() for i, j in pairs), default=0.0)),
        "score_max_abs_diff": float(max((abs(reference["scores"][i] - candidate["scores"][j]) for i, j in pairs), default=0.0)),
    }


def parity(detector: torch.nn.Module, model_path: str | Path, inputs: list[np.ndarray], threshold: float = 0.05):
    """ONNX Runtime (the served session) vs PyTorch eager on the same tensors. The reference is the
    PyTorch model run in float64, so neither float32 implementation is taken as the truth; float32
    eager's own differences from it are reported too (`eager_*`), for scale.

    Per image: detections above `threshold`, pairs (same label, boxes within the BOX_TOLERANCE_PX
    target), ties (unmatched only because near-equal scores ranked or suppressed differently),
    unexplained unmatched detections, the paired fraction and max abs box/score differences. Pairing
    at the target, not looser, matters: a barely trained Faster R-CNN emits NMS twins (two proposals
    decoding to boxes 0.03 px apart, scores equal to 1e-9) and float noise decides which one survives;
    a looser pairing would take the two for one detection that moved.

    Such a model also scores its anchors almost alike, so float-level differences change which
    proposals pass the RPN top-k; a few percent of its final boxes then differ wholesale (not a tie
    this function can see). Judge such models by paired_fraction, not by unmatched == 0."""
    heads = getattr(detector, "roi_heads", detector)
    max_detections = heads.detections_per_img  # the cap at which the weakest output is a coin toss
    detector.eval()
    reference_model = copy.deepcopy(detector).double()
    session = Detector(model_path).session
    rows = []
    for tensor in inputs:
        with torch.no_grad():
            reference = reference_model([torch.from_numpy(tensor[0]).double()])[0]
            eager = detector([torch.from_numpy(tensor[0])])[0]
        reference = _above({k: v.numpy() for k, v in reference.items()}, threshold)
        ort_out = _above(dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"images": tensor}))), threshold)
        eager_figures = compare_detections(reference, _above({k: v.numpy() for k, v in eager.items()}, threshold), max_detections)
        rows.append(
            {
                "detections_torch": len(reference["scores"]),
                "detections_onnx": len(ort_out["scores"]),
                **compare_detections(reference, ort_out, max_detections),
                **{"eager_" + k: eager_figures[k] for k in ("box_max_abs_diff", "score_max_abs_diff")},
            }
        )
    return rows


def quantize_int8(model_path: str | Path, out_path: str | Path, calibration_inputs: list[np.ndarray]) -> Path:
    """Static QDQ INT8, per channel, Conv/Gemm/MatMul (NMS and box decoding stay float), calibrated on
    real preprocessed images. Dynamic quantisation made these detectors slower here."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(calibration_inputs)

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {"images": item}

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    # Carry the contract over: the quantised graph serves the same inputs and outputs.
    source = onnx.load(str(model_path), load_external_data=False)
    model = onnx.load(str(out_path))
    write_metadata(
        model,
        {p.key.removeprefix(META_PREFIX): p.value for p in source.metadata_props if p.key.startswith(META_PREFIX)}
        | {"quantization": "static QDQ int8, per-channel, Conv/Gemm/MatMul"},
    )
    onnx.save(model, str(out_path))
    return out_path


def detections_to_arrays(detections: list[dict], class_map: ClassMap) -> dict[str, np.ndarray]:
    """The handler's JSON detections back to arrays (boxes [N,4], scores [N], labels [N] ids).

    "background" maps back to 0, the inverse of ClassMap.name(0): models that count background among
    their classes (IceVision's) can emit it."""
    return {
        "boxes": np.array([d["box"] for d in detections], dtype=np.float64).reshape(-1, 4),
        "scores": np.array([d["score"] for d in detections], dtype=np.float64),
        "labels": np.array([0 if d["label"] == BACKGROUND else class_map.id(d["label"]) for d in detections], dtype=np.int64),
    }


def evaluate_detector(detector, records) -> dict[str, float]:
    """COCO mAP of an ONNX Detector end to end (decode -> letterbox -> ORT -> restore) against the
    records' boxes in original pixels: the accuracy the Lambda will serve."""
    from helpers.metrics import mean_average_precision
    from helpers.runtime.preprocess import decode_image

    predictions, targets = [], []
    for record in records:
        detections, _, _ = detector.predict(decode_image(record.image_path.read_bytes()), 0.0, 1000)
        arrays = detections_to_arrays(detections, detector.class_map)
        predictions.append({
            "boxes": torch.tensor(arrays["boxes"], dtype=torch.float32),
            "scores": torch.tensor(arrays["scores"], dtype=torch.float32),
            "labels": torch.from_numpy(arrays["labels"]),
        })
        targets.append({
            "boxes": torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([detector.class_map.id(n) for n in record.labels], dtype=torch.int64),
        })
    return mean_average_precision(predictions, targets, detector.class_map.names)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export a training checkpoint to ONNX.")
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="artifacts/model.onnx")
    args = parser.parse_args(argv)
    if not Path(args.checkpoint).is_file():
        print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 2
    path = export_checkpoint(args.checkpoint, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
