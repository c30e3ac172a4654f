"""Comparing two detectors' outputs on the same input: one-to-one pairing, ties, parity figures.

Used where an export must be proven equal to its source: ONNX Runtime vs PyTorch (`parity`), the
handler vs the PyTorch model (tests), and our handler vs IceVision's predictions (the IceVision lane).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from helpers.evaluate.matching import Matching, greedy_pairs, iou_matrix
from helpers.runtime.detections import Detections
from helpers.runtime.model import Detector

BOX_TOLERANCE_PX = 1e-2  # parity targets: ONNX Runtime vs PyTorch, per paired detection
SCORE_TOLERANCE = 1e-4
TIE_SCORE = 1e-4  # scores closer than this may legitimately rank or suppress differently
TAIL = 0.01  # relative score band above the weakest kept detection of a full (capped) output


def match_detections(a: Detections, b: Detections, max_distance: float) -> Matching:
    """One-to-one pairs (i in a, j in b) of same-label detections whose boxes agree within
    `max_distance` px (L-inf), closest pair first: the shared greedy core with a distance criterion,
    not COCO's score order (two models' outputs have no ground truth to rank against)."""
    distance = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(axis=2)
    distance[a.labels[:, None] != b.labels[None, :]] = np.inf
    return greedy_pairs(distance, max_distance)


def tie_explained(index: int, side: Detections, other: Detections, at_cap: bool) -> bool:
    """An unmatched detection is a tie, not a disagreement, when its score is within 1% of the weakest
    detection of a full (capped) output — near-equal scores upstream (RPN top-k, NMS) decide what makes
    the cut — or when the other side kept an overlapping same-label box with a score within 1% instead
    (NMS twins: a barely trained model scores whole clusters alike, so tiny upstream differences change
    which member survives suppression)."""
    score = side.scores[index]
    if at_cap and score <= side.scores.min() * (1 + TAIL) + TIE_SCORE:
        return True
    if len(other.boxes) == 0:
        return False
    iou = iou_matrix(side.boxes[index : index + 1], other.boxes)[0]
    near_equal = np.abs(other.scores - score) <= max(TIE_SCORE, TAIL * score)
    twins = (iou > 0.5) & near_equal & (other.labels == side.labels[index])
    return bool(twins.any())


def compare_detections(reference: Detections, candidate: Detections, max_detections: int) -> dict:
    """Pairs, ties, unexplained leftovers and max box/score differences of `candidate` vs `reference`."""
    pairs, only_ref, only_cand = match_detections(reference, candidate, BOX_TOLERANCE_PX)
    ref_cap, cand_cap = len(reference.scores) >= max_detections, len(candidate.scores) >= max_detections
    ties = sum(tie_explained(i, reference, candidate, ref_cap) for i in only_ref)
    ties += sum(tie_explained(j, candidate, reference, cand_cap) for j in only_cand)
    most = max(len(reference.scores), len(candidate.scores))
    return {
        "matched": len(pairs),
        "ties": ties,
        "unmatched": len(only_ref) + len(only_cand) - ties,
        "paired_fraction": len(pairs) / most if most else 1.0,
        "box_max_abs_diff": float(
            max((np.abs(reference.boxes[i] - candidate.boxes[j]).max() for i, j in pairs), default=0.0)
        ),
        "score_max_abs_diff": float(
            max((abs(reference.scores[i] - candidate.scores[j]) for i, j in pairs), default=0.0)
        ),
    }


def parity(detector: torch.nn.Module, model_path: str | Path, inputs: list[np.ndarray], threshold: float = 0.05):
    """ONNX Runtime (the served session) vs PyTorch eager on the same tensors. The reference is the
    PyTorch model run in float64, so neither float32 implementation is taken as the truth; float32
    eager's own differences from it are reported too (`eager_*`), for scale.

    Per image: detections above `threshold`, pairs (same label, boxes within the BOX_TOLERANCE_PX
    target), ties (unmatched only because near-equal scores ranked or suppressed differently),
    unexplained unmatched detections, the paired fraction and max abs box/score differences. Pairing
    at the target, not looser, matters: a barely trained Faster R-CNN emits NMS twins (two proposals
    decoding to boxes a few hundredths of a pixel apart, with equal scores) and float noise decides
    which one survives; a looser pairing would take the two for one detection that moved.

    Such a model also scores its anchors almost alike, so float-level differences change which
    proposals pass the RPN top-k; a few percent of its final boxes then differ wholesale (not a tie
    this function can see). Judge such models by paired_fraction, not by unmatched == 0."""
    heads = getattr(detector, "roi_heads", detector)
    max_detections = heads.detections_per_img  # the cap at which the weakest output is a coin toss
    detector.eval()
    reference_model = copy.deepcopy(detector).double()
    served = Detector(model_path)
    names, input_name = list(served.contract.output_names), served.input_name
    rows = []
    for tensor in inputs:
        with torch.no_grad():
            reference = reference_model([torch.from_numpy(tensor[0]).double()])[0]
            eager = detector([torch.from_numpy(tensor[0])])[0]
        reference = Detections.from_outputs(reference).above(threshold)
        outputs = served.session.run(names, {input_name: tensor})
        ort_out = Detections(*outputs).above(threshold)
        eager_figures = compare_detections(reference, Detections.from_outputs(eager).above(threshold), max_detections)
        rows.append(
            {
                "detections_torch": len(reference.scores),
                "detections_onnx": len(ort_out.scores),
                **compare_detections(reference, ort_out, max_detections),
                **{"eager_" + k: eager_figures[k] for k in ("box_max_abs_diff", "score_max_abs_diff")},
            }
        )
    return rows
