"""Load an exported detector into ONNX Runtime and run image -> detections.

The model contract (helpers.runtime.contract) comes from the model's own metadata. Models exported
elsewhere (the blog post's IceVision `to_onnx`) have none: pass a class_map.json (IceVision {name: id}
form accepted) and the contract's defaults are assumed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from helpers.runtime.classmap import ClassMap
from helpers.runtime.contract import META_PREFIX, ModelContract
from helpers.runtime.cpus import available_cpus
from helpers.runtime.decode import Decoded
from helpers.runtime.detections import Detections
from helpers.runtime.geometry import Letterbox
from helpers.runtime.postprocess import to_detections
from helpers.runtime.preprocess import preprocess


class ModelError(RuntimeError):
    """The model file does not meet the contract (checked once, at load time)."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What Detector.predict found: the detections, where the image sat in the model input (to map
    other boxes in model-input pixels back, e.g. the eager model's), and the stages' times in ms."""

    detections: Detections
    letterbox: Letterbox
    timings_ms: dict[str, float]  # preprocess, inference, postprocess


def session_options(threads: int | None = None, optimized_model_path: str | None = None):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimized_model_path:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


class Detector:
    """An ONNX Runtime session plus the preprocessing and class map it was trained with."""

    def __init__(
        self,
        model_path: str | Path,
        class_map_path: str | Path | None = None,
        threads: int | None = None,
        optimized_model_path: str | None = None,
    ):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}")
        try:
            self.session = ort.InferenceSession(
                str(self.path),
                session_options(threads, optimized_model_path),
                providers=["CPUExecutionProvider"],
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load the model: {err}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = {k.removeprefix(META_PREFIX): v for k, v in meta.items() if k.startswith(META_PREFIX)}
        classes = ClassMap.load(class_map_path) if class_map_path is not None else None
        try:
            self.contract = ModelContract.from_metadata(self.metadata, classes)
        except ValueError as err:
            raise ModelError(f"{self.path}: {err}") from None
        self.config = self.contract.preprocess
        self.class_map = self.contract.classes
        self.input_name = self._check_input()
        self.output_names = self._output_names()
        self.model_id = self.metadata.get("model_name", self.path.stem)

    def _check_input(self) -> str:
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected 1 input, found {len(inputs)}")
        expected, shape = self.contract.input_shape, list(inputs[0].shape)
        if shape != expected or inputs[0].type != self.contract.input_type:
            raise ModelError(
                f"{self.path}: input {inputs[0].name!r} is {inputs[0].type} {shape}; the contract is "
                f"{self.contract.input_type} {expected} (a fixed shape: dynamic dimensions or another "
                f"size would not match the letterbox)"
            )
        return inputs[0].name

    def _output_names(self) -> list[str]:
        names = [o.name for o in self.session.get_outputs()]
        wanted = list(self.contract.output_names)
        if set(wanted) <= set(names):
            return wanted
        if len(names) == 3:  # IceVision/Lightning to_onnx: unnamed, in the order boxes, scores, labels
            return names
        raise ModelError(f"{self.path}: outputs {names}; expected {wanted}")

    def predict(
        self, image: np.ndarray | Decoded, score_threshold: float = 0.5, max_detections: int = 100
    ) -> Prediction:
        """RGB uint8 image, or Decoded (boxes then come back in the original image's pixels) -> Prediction."""
        t0 = time.perf_counter()
        tensor, geometry = preprocess(image, self.config)
        t1 = time.perf_counter()
        boxes, scores, labels = self.session.run(self.output_names, {self.input_name: tensor})
        t2 = time.perf_counter()
        detections = to_detections(boxes, scores, labels, geometry, score_threshold, max_detections)
        t3 = time.perf_counter()
        timings = {
            "preprocess": (t1 - t0) * 1e3,
            "inference": (t2 - t1) * 1e3,
            "postprocess": (t3 - t2) * 1e3,
        }
        return Prediction(detections, geometry, timings)
