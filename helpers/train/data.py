"""The data a run trains and validates on: records split and prepared (PreparedData), the torch
Dataset that decodes and augments them, and the run's two loaders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from helpers.data import dataset as fridge_data
from helpers.data.records import Record
from helpers.data.splits import rarest_class, small_set_parts, three_parts
from helpers.data.synthetic import is_synthetic, make_synthetic_voc
from helpers.paths import THUMBNAILS_DIR
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import PREPROCESS
from helpers.runtime.decode import decode_for_model
from helpers.train.config import TrainConfig
from helpers.train.transforms import train_transform, valid_transform


class DetectionDataset(Dataset):
    """Records -> (float32 CHW tensor, torchvision target) through an albumentations transform.

    Images are decoded with the serving decoder (Pillow, EXIF-aware, JPEG DCT scaling for photos at
    least twice `image_size`) so train and serve see the same pixels before the transform; boxes follow
    the decoder's reduction.
    """

    def __init__(self, records, transform, class_map: ClassMap, image_size: int = PREPROCESS.image_size):
        self.records, self.transform, self.class_map = list(records), transform, class_map
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        decoded = decode_for_model(record.image_path.read_bytes(), self.image_size, max_pixels=1 << 40)
        out = self.transform(
            image=decoded.pixels,
            bboxes=np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4) / np.float32(decoded.reduction),
            labels=[self.class_map.id(name) for name in record.labels],
        )
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
        }
        return tensor, target


def collate(batch):
    images, targets = zip(*batch)
    return list(images), list(targets)


@dataclasses.dataclass
class PreparedData:
    source: fridge_data.DataSource
    train: list[Record]  # every training image of an epoch (repeats included)
    valid_real: list[Record]  # validation: chooses the checkpoint and the served threshold
    test_real: list[Record]  # test: chooses nothing; what the run is reported on
    valid_synthetic: list[Record]  # secondary: composites of the validation photos
    photos: bool = False  # whether the object photos are part of this run's real images

    def summary(self) -> dict:
        return {
            **self.source.summary(),
            "train_images": len(self.train),
            "train_synthetic_images": sum(map(is_synthetic, self.train)),
            "train_object_photos": sum(map(is_object_photo, self.train)),
            "train_real_images": list(self.real_train_names),
            "valid_real_images": names(self.valid_real),
            "valid_real_boxes": sum(len(r.boxes) for r in self.valid_real),
            "test_real_images": names(self.test_real),
            "test_real_boxes": sum(len(r.boxes) for r in self.test_real),
            "valid_synthetic_images": len(self.valid_synthetic),
        }

    @property
    def real_train_names(self) -> tuple[str, ...]:
        """The real training images once each (fridge images first, then object photos)."""
        real = {r.image_path.name: is_object_photo(r) for r in self.train if not is_synthetic(r)}
        return tuple(sorted(real, key=lambda name: (real[name], name)))

    def split(self, train_dir: str | Path) -> fridge_data.Split:
        return fridge_data.Split(
            self.source.name,
            self.source.root,
            self.real_train_names,
            tuple(names(self.valid_real)),
            tuple(names(self.test_real)),
            synthetic_dir(train_dir, "valid") if self.valid_synthetic else None,
            THUMBNAILS_DIR if self.photos else None,
        )


def names(records: list[Record]) -> list[str]:
    return [r.image_path.name for r in records]


def record_name(record: Record) -> str:
    return record.image_path.name


def is_object_photo(record: Record) -> bool:
    return record.image_path.parent == THUMBNAILS_DIR


def synthetic_dir(train_dir: str | Path, part: str) -> Path:
    """Where a run's synthetic images live: part "train" (composites) or "valid" (the hold-out)."""
    return Path(train_dir) / "synthetic" / part


def prepare_data(config: TrainConfig) -> PreparedData:
    """Resolve the dataset and split it three ways (config.fold_spec(), helpers.data.splits): by image,
    stratified by each image's rarest class. With the sample, the 6 fridge photos rotate through test
    and validation (small_set_parts) and the object photos join, split per class; training photos train
    as photos (`photo_repeats` times) and as objects in `n_synthetic` composites under out_dir/synthetic.
    The synthetic hold-out (a tenth as many images, at least 20) pastes only validation photos."""
    source = fridge_data.resolve_dataset(config.dataset, Path(config.data_cache), config.skip_bad)
    spec = config.fold_spec()
    if not source.uses_synthetic:
        parts = three_parts(source.records, spec, rarest_class(source.records), record_name)
        if not parts.train or not parts.valid or not parts.test:
            raise ValueError(
                f"{source.describe()}: {len(source.records)} images cannot make train, validation and test parts "
                f"(fold {spec.fold} of {spec.folds}, valid_fraction {spec.valid_fraction})"
            )
        return PreparedData(source, parts.train, parts.valid, parts.test, [])
    fridge = small_set_parts(source.records, spec, record_name)
    photos = three_parts(fridge_data.object_photos(THUMBNAILS_DIR), spec, lambda r: r.labels[0], record_name)
    train = fridge.train * config.real_repeats + photos.train * config.photo_repeats
    valid, test = photos.valid + fridge.valid, photos.test + fridge.test
    if config.n_synthetic <= 0:
        return PreparedData(source, train, valid, test, [], True)
    synthetic = dict(objects_per_image=tuple(config.synthetic_objects), margin=config.synthetic_margin)
    synthetic_train = make_synthetic_voc(
        synthetic_dir(config.out_dir, "train"), config.n_synthetic, config.seed, photos.train, **synthetic
    )
    synthetic_valid = make_synthetic_voc(
        synthetic_dir(config.out_dir, "valid"),
        max(20, config.n_synthetic // 10),
        config.seed + 1,
        photos.valid,
        **synthetic,
    )
    return PreparedData(source, train + synthetic_train, valid, test, synthetic_valid, True)


def loaders(config: TrainConfig, data: PreparedData, class_map: ClassMap) -> tuple[DataLoader, DataLoader]:
    """(training, validation) loaders. Object photos train with their own scale jitter. The validation
    loader has its own generator: a DataLoader otherwise draws a seed from torch's global generator each
    time it is iterated, so how often a run validates would change the order it trains in."""
    contract = config.preprocess()
    common = dict(batch_size=config.batch_size, collate_fn=collate, num_workers=0)
    photos = [r for r in data.train if is_object_photo(r)]
    others = [r for r in data.train if not is_object_photo(r)]
    jittered = train_transform(contract, min_scale=config.photo_min_scale, seed=config.seed + 1)
    training = ConcatDataset(
        [
            DetectionDataset(others, train_transform(contract, seed=config.seed), class_map, contract.image_size),
            DetectionDataset(photos, jittered, class_map, contract.image_size),
        ]
    )
    validation = DetectionDataset(data.valid_real, valid_transform(contract), class_map, contract.image_size)
    return (
        DataLoader(training, shuffle=True, **common),
        DataLoader(validation, generator=torch.Generator().manual_seed(config.seed), **common),
    )
