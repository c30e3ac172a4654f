import torch

from helpers import data as fridge_data
from helpers.config import FRIDGE_CLASSES, PREPROCESS
from helpers.models import SMALL_MODEL, build_detector
from helpers.runtime.classmap import ClassMap
from helpers.train import DetectionDataset, collate, load_checkpoint
from helpers.transforms import valid_transform


def _fixed_batch(records):
    dataset = DetectionDataset(records, valid_transform(PREPROCESS), ClassMap(FRIDGE_CLASSES))
    return collate([dataset[i] for i in range(len(dataset))])


def _loss(model, images, targets):
    torch.manual_seed(0)  # the RPN/ROI samplers draw random proposals
    return float(sum(model(images, targets).values()))


def test_training_steps_lower_the_loss_on_real_images(sample_records):
    torch.manual_seed(0)
    model, used = build_detector(SMALL_MODEL, 5, PREPROCESS.image_size, weights="none")
    assert used == "none"
    model.train()
    images, targets = _fixed_batch(sample_records[:4])
    before = _loss(model, images, targets)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(8):
        optimizer.zero_grad()
        sum(model(images, targets).values()).backward()
        optimizer.step()
    after = _loss(model, images, targets)
    assert after < 0.8 * before, (before, after)


def test_quick_training_writes_a_checkpoint_that_reloads_to_identical_outputs(trained, sample_records):
    checkpoint = trained["checkpoint"]
    assert trained["weights_used"] == "none (offline fallback)"  # offline here, and said so
    images, _ = _fixed_batch(sample_records[4:])
    first = load_checkpoint(checkpoint)
    second = load_checkpoint(checkpoint)
    assert first.hparams.weights_used == "none (offline fallback)"
    with torch.no_grad():
        out1, out2 = first(images), second(images)
    for a, b in zip(out1, out2):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])
    assert ClassMap.load(fridge_data.Path(checkpoint).parent / "class_map.json").names == FRIDGE_CLASSES
    metrics_csv = fridge_data.Path(trained["metrics_csv"]).read_text()
    assert "val_real/map" in metrics_csv and "train/loss_epoch" in metrics_csv
