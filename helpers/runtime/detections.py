"""One typed value for a detector's output, from the model to the JSON response and back: the
handler, the metrics and the parity checks all pass it instead of dicts of lists."""

from __future__ import annotations

import dataclasses

import numpy as np

from helpers.runtime.classmap import BACKGROUND, ClassMap


@dataclasses.dataclass(frozen=True)
class Detections:
    """boxes float64 [N, 4] xyxy pixels, scores float64 [N], labels int64 [N] class ids (0: background)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError("boxes, scores and labels disagree in length")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index) -> Detections:
        """The detections at `index` (an index array or a boolean mask), in that order."""
        return Detections(self.boxes[index], self.scores[index], self.labels[index])

    def above(self, threshold: float) -> Detections:
        return self.take(self.scores >= threshold)

    @classmethod
    def from_outputs(cls, outputs) -> Detections:
        """From a torchvision-style {"boxes", "scores", "labels"} of tensors or arrays."""
        return cls(
            *(
                np.asarray(outputs[k].detach().cpu() if hasattr(outputs[k], "detach") else outputs[k])
                for k in ("boxes", "scores", "labels")
            )
        )

    def to_json(self, class_map: ClassMap) -> list[dict]:
        """[{"label", "score", "box": [x1, y1, x2, y2]}] with plain floats (json.dumps-safe); boxes rounded
        to 0.01 px and scores to 1e-5, since finer digits are noise and only grow the body."""
        return [
            {
                "label": class_map.name(int(label)),
                "score": round(float(score), 5),
                "box": [round(float(v), 2) for v in box],
            }
            for box, score, label in zip(self.boxes, self.scores, self.labels)
        ]

    @classmethod
    def from_json(cls, items: list[dict], class_map: ClassMap) -> Detections:
        """The inverse of to_json. "background" maps back to 0, the inverse of ClassMap.name(0): models
        that count background among their classes (IceVision's) can emit it."""
        return cls(
            [d["box"] for d in items],
            [d["score"] for d in items],
            [0 if d["label"] == BACKGROUND else class_map.id(d["label"]) for d in items],
        )
