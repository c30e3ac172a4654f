"""The serving levers one at a time on the trained detector: what each gains in ms and costs in test mAP,
beside the ceilings measured in the same run (the model's GFLOP, ONNX Runtime's fp32 and int8 GEMM peaks).

Each lever was chosen on the validation images (docs/decisions.md, "The serving graph"); the figures
here are on the test images, which chose nothing. The shipped model is what helpers.export.ship
decides between the served graph's FP32 and INT8.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch.utils.flop_counter import FlopCounterMode

from helpers.evaluate.intervals import bootstrap, image_statistics
from helpers.evaluate.metrics import served_predictions
from helpers.export.onnx_export import export_checkpoint
from helpers.export.quantize import FLOAT_MAX_STRIDE, quantize_int8
from helpers.export.serving_graph import SERVING_GRAPH, TORCHVISION_GRAPH, ServingGraph, apply_proposals
from helpers.export.ship import decide
from helpers.measure.timing import interleaved, measure
from helpers.runtime.config import PREPROCESS
from helpers.runtime.decode import decode_for_model
from helpers.runtime.model import Detector
from helpers.runtime.preprocess import preprocess

#: (row, graph, INT8's float-up-to stride or None for FP32), in the order the levers were pulled.
LEVERS = (
    ("torchvision's graph, FP32", TORCHVISION_GRAPH, None),
    ("torchvision's graph, INT8", TORCHVISION_GRAPH, FLOAT_MAX_STRIDE),
    ("+ levels merged by Gather, FP32", ServingGraph(proposals=None), None),
    (f"+ {SERVING_GRAPH.proposals} proposals, FP32", SERVING_GRAPH, None),
    (f"+ INT8, float up to stride {FLOAT_MAX_STRIDE}", SERVING_GRAPH, FLOAT_MAX_STRIDE),
    ("INT8 in every layer (float up to stride 1)", SERVING_GRAPH, 1),
)


def model_gflop(module: torch.nn.Module, graph: ServingGraph) -> float:
    """GFLOP of one 384 px inference of the eager model with the graph's proposal count (torch's
    FlopCounterMode: convolutions and matrix products; RoIAlign and NMS are not counted)."""
    module = copy.deepcopy(module)
    apply_proposals(module, graph)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module([torch.zeros(3, PREPROCESS.image_size, PREPROCESS.image_size)])
    return counter.get_total_flops() / 1e9


def gemm_peak(threads: int, int8: bool = False, n: int = 2048, repeats: int = 10) -> float:
    """ONNX Runtime's n^3 matrix product throughput, the ceiling of a conv-heavy graph here: fp32 MatMul
    in GFLOP/s, or with int8=True uint8 x int8 MatMulInteger (int32 accumulate) in GOP/s."""
    rng = np.random.default_rng(0)
    if int8:
        op, types = "MatMulInteger", (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)
        a, b = rng.integers(0, 255, (n, n), dtype=np.uint8), rng.integers(-127, 127, (n, n), dtype=np.int8)
    else:
        op, types = "MatMul", (TensorProto.FLOAT,) * 3
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    values = [helper.make_tensor_value_info(name, kind, [n, n]) for name, kind in zip("abc", types)]
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "gemm", values[:2], values[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    best = measure(lambda: session.run(None, {"a": a, "b": b}), repeats)["min_ms"]
    return 2 * n**3 / (best / 1e3) / 1e9


def _variants(checkpoint: Path, calibration: list[np.ndarray], out_dir: Path) -> dict[str, Path]:
    exported: dict[ServingGraph, Path] = {}
    paths = {}
    for index, (row, graph, stride) in enumerate(LEVERS):
        if graph not in exported:
            exported[graph] = export_checkpoint(checkpoint, out_dir / f"lever{index}.onnx", graph=graph)
        fp32 = exported[graph]
        paths[row] = (
            fp32
            if stride is None
            else quantize_int8(fp32, out_dir / f"lever{index}_int8.onnx", calibration, float_max_stride=stride)
        )
    return paths


def measure_levers(
    checkpoint: Path, module, split, calibration: list[np.ndarray], jpeg: bytes, out_dir: Path, repeats: int
) -> dict:
    """Every LEVERS row on the same JPEG, interleaved: inference alone and the request end to end
    (decode, letterbox, inference, restore), 2 threads; test mAP; and which model ships."""
    paths = _variants(checkpoint, calibration, out_dir)
    detectors = {row: Detector(path, threads=2) for row, path in paths.items()}
    tensor, _ = preprocess(decode_for_model(jpeg, PREPROCESS.image_size))
    threshold = next(iter(detectors.values())).contract.score_threshold or 0.5

    def request(detector):
        return detector.predict(decode_for_model(jpeg, detector.config.image_size), threshold)

    inference = interleaved(
        {row: (lambda d=d: d.session.run(None, {d.input_name: tensor})) for row, d in detectors.items()}, repeats, 2
    )
    end_to_end = interleaved({row: (lambda d=d: request(d)) for row, d in detectors.items()}, repeats, 2)
    test = split.evaluation()
    rows = []
    for row, graph, stride in LEVERS:
        predictions, targets = served_predictions(detectors[row], test)
        intervals = bootstrap(image_statistics(predictions, targets, detectors[row].class_map.names, threshold))
        rows.append(
            {
                "lever": row,
                "inference": inference[row],
                "end_to_end": end_to_end[row],
                **{name: dataclasses.asdict(intervals[name]) for name in ("map_50", "map")},
                "gflop": model_gflop(module, graph),
                "int8": stride is not None,
            }
        )
    served = [row for row, graph, _ in LEVERS if graph == SERVING_GRAPH][:2]
    decision = decide(paths[served[0]], paths[served[1]], test)
    return {
        "rows": rows,
        "images": len(test),
        "shipped": decision.model,
        "ship_reason": decision.reason,
        "shipped_lever": served[1] if decision.model == paths[served[1]].name else served[0],
    }
