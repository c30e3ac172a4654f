"""A finished training run's summary (summary.json): written by train(), read by the pipeline, the
accuracy tool and the notebooks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


@dataclasses.dataclass
class RunSummary:
    """summary.json's fields, in its order."""

    config: dict  # TrainConfig.as_record()
    config_hash: str  # TrainConfig.fingerprint()
    code: dict[str, str]  # the training code's file digests
    finished: str  # ISO time, UTC
    model: str
    model_note: str | None  # why the model is not the one asked for
    weights_used: str
    data: dict  # PreparedData.summary()
    checkpoint: str  # the kept checkpoint's absolute path
    best_epoch: int  # the kept checkpoint's epoch (from 0)
    best_selection_score: float
    best_val_real_map: float | None
    synthetic_holdout_map_50: float | None  # on the kept checkpoint; None without a synthetic hold-out
    served_threshold: float
    test: dict  # the result: the test images at the served threshold, with intervals (threshold.test_report)
    validation: dict  # the selection record: what chose the threshold (threshold.choose_served_threshold)
    epochs: int
    lr: float
    head_lr_factor: float
    batch_size: int
    world_size: int
    optimizer_steps: int
    seconds: float
    seconds_per_epoch: float
    cpu_seconds: float  # all threads of this process (rank 0's only in a multi-process run)
    n_train: int
    n_valid_real: int
    n_test_real: int
    n_valid_synthetic: int
    metrics_csv: str  # Lightning's CSV log, absolute

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RunSummary:
        return cls(**json.loads(Path(path).read_text()))
