"""The model contract as data: the one object that says what an exported detector takes and gives.

Export writes it into the ONNX metadata; the Detector, quantisation, parity, the benchmark and the
accuracy report read it back from there. Stdlib only (part of the zip).
"""

from __future__ import annotations

import dataclasses
import json

from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import DEFAULT_SCORE_THRESHOLD, PREPROCESS, PreprocessConfig

#: Every metadata key this project writes starts with it.
META_PREFIX = "helpers."


def served_threshold(request: float | None, environment: float | None, model: float | None) -> float:
    """The score threshold a response uses: the request's, else the environment's (SCORE_THRESHOLD),
    else the one chosen from data at training (the model's metadata), else DEFAULT_SCORE_THRESHOLD."""
    return next((t for t in (request, environment, model) if t is not None), DEFAULT_SCORE_THRESHOLD)


@dataclasses.dataclass(frozen=True)
class ModelContract:
    """Input `input_name` float32 [1, 3, S, S], letterboxed and normalised by `preprocess`; outputs
    boxes float32 [N, 4] xyxy in input pixels, scores float32 [N], labels int64 [N] in 1..C (0 is
    background), after NMS; `score_threshold` is the served default chosen from data at training."""

    classes: ClassMap
    preprocess: PreprocessConfig = PREPROCESS
    input_name: str = "images"
    output_names: tuple[str, str, str] = ("boxes", "scores", "labels")
    input_type: str = "tensor(float)"
    score_threshold: float | None = None

    @property
    def input_shape(self) -> list[int]:
        return [1, 3, self.preprocess.image_size, self.preprocess.image_size]

    def describe(self) -> str:
        """One line for people (stored beside the machine-readable keys)."""
        return (
            f"input {self.input_name} float32 {self.input_shape} letterboxed+normalised; outputs "
            f"{self.output_names[0]} float32 [N,4] xyxy input pixels, {self.output_names[1]} float32 [N], "
            f"{self.output_names[2]} int64 [N] (1..C), after score threshold and NMS"
        )

    def to_metadata(self) -> dict[str, str]:
        """The metadata entries (without META_PREFIX) that carry this contract."""
        entries = {
            "preprocess": self.preprocess.to_json(),
            "classes": json.dumps(list(self.classes.names)),
            "input": json.dumps({"name": self.input_name, "shape": self.input_shape, "type": self.input_type}),
            "outputs": json.dumps(list(self.output_names)),
            "contract": self.describe(),
        }
        if self.score_threshold is not None:
            entries["score_threshold"] = repr(float(self.score_threshold))
        return entries

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], classes: ClassMap | None = None) -> ModelContract:
        """From metadata entries (prefix removed). `classes` stands in for a model exported elsewhere
        (the blog's IceVision `to_onnx`), which carries no metadata: then the defaults are assumed."""
        if classes is None:
            if "classes" not in metadata:
                raise ValueError("no class names in the model metadata; pass a class_map.json")
            classes = ClassMap(json.loads(metadata["classes"]))
        fields = {}
        if "preprocess" in metadata:
            fields["preprocess"] = PreprocessConfig.from_json(metadata["preprocess"])
        if "input" in metadata:
            fields["input_name"] = json.loads(metadata["input"])["name"]
        if "outputs" in metadata:
            fields["output_names"] = tuple(json.loads(metadata["outputs"]))
        if "score_threshold" in metadata:
            fields["score_threshold"] = float(metadata["score_threshold"])
        return cls(classes=classes, **fields)
