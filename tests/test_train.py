import csv
import dataclasses
import itertools
import json
import math
import os

import pytest
import torch

from helpers.data import dataset as fridge_data
from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS
from helpers.runtime.decode import decode_image
from helpers.train.backbones import WEIGHTS_RECORD
from helpers.train.callbacks import BestCheckpoint
from helpers.train.data import DetectionDataset, collate
from helpers.train.models import BLOG_MODEL, LITE0_MODEL, SMALL_MODEL, build_detector
from helpers.train.module import BODY_GROUP, HEADS_GROUP, MONITOR, load_checkpoint, resolve_head_lr_factor
from helpers.train.summary import RunSummary
from helpers.train.transforms import train_transform, valid_transform


def _fixed_batch(records):
    dataset = DetectionDataset(records, valid_transform(PREPROCESS), ClassMap(FRIDGE_CLASSES))
    return collate([dataset[i] for i in range(len(dataset))])


def _loss(model, images, targets):
    torch.manual_seed(0)  # the RPN/ROI samplers draw random proposals
    return float(sum(model(images, targets).values()))


def _augmented(records, seed):
    """Each sample image augmented three times, as three epochs would draw them."""
    dataset = DetectionDataset(records, train_transform(PREPROCESS, seed=seed, min_scale=0.5), ClassMap(FRIDGE_CLASSES))
    return [dataset[i] for i in range(len(dataset)) for _ in range(3)]


def test_a_seeded_training_augmentation_replays_and_another_seed_differs(sample_records):
    """A training run is reproducible only if its augmentations are: albumentations 2.x draws from
    the Compose's own generator, which seed_everything does not reach."""
    first, again, other = (_augmented(sample_records, seed) for seed in (7, 7, 8))
    for (image, target), (image_again, target_again) in zip(first, again):
        assert torch.equal(image, image_again) and torch.equal(target["boxes"], target_again["boxes"])
    assert sum(not torch.equal(a[0], b[0]) for a, b in zip(first, other)) >= len(first) - 1


def test_the_random_transforms_of_a_seeded_augmentation_are_drawn_independently(sample_records):
    """Each p=0.5 transform on its own: with albumentations' Compose(seed=...) every transform drew the
    same numbers, so HorizontalFlip, RGBShift and Blur were applied always together, and 16% of the
    images got no augmentation at all (1/32 expected)."""
    record = sample_records[0]
    image = decode_image(record.image_path.read_bytes())
    augment = train_transform(PREPROCESS, seed=42)
    augment.save_applied_params = True
    draws = 400
    applied = [
        {name for name, _ in augment(image=image, bboxes=record.boxes, labels=record.labels)["applied_transforms"]}
        for _ in range(draws)
    ]
    coin_flips = ("HorizontalFlip", "RGBShift", "RandomBrightnessContrast", "Blur")
    for name in coin_flips:  # each about half the time: 200 +- 3 standard deviations (10)
        assert 170 <= sum(name in a for a in applied) <= 230, name
    for first, second in itertools.combinations(coin_flips, 2):  # both together about a quarter of the time
        assert 70 <= sum({first, second} <= a for a in applied) <= 130, (first, second)
    none = sum(not (set(coin_flips) | {"Affine"}) & a for a in applied)
    assert none <= 25  # 1/32 of 400 is 12.5


@pytest.mark.slow
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
    checkpoint = trained.checkpoint
    assert trained.model == LITE0_MODEL and trained.weights_used == WEIGHTS_RECORD
    assert trained.data["dataset"] == "sample"
    images, _ = _fixed_batch(sample_records[4:])
    first = load_checkpoint(checkpoint)
    second = load_checkpoint(checkpoint)
    assert first.run.weights_used == WEIGHTS_RECORD and first.run.data_used == "sample"
    with torch.no_grad():
        out1, out2 = first(images), second(images)
    for a, b in zip(out1, out2):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key])
    assert ClassMap.load(fridge_data.Path(checkpoint).parent / "class_map.json").names == FRIDGE_CLASSES
    metrics_csv = fridge_data.Path(trained.metrics_csv).read_text()
    assert "val_real/map" in metrics_csv and "train/loss_epoch" in metrics_csv


def test_the_kept_checkpoint_is_the_best_epoch_and_the_latest_of_ties(trained):
    scores = {}
    with open(trained.metrics_csv) as f:
        for row in csv.DictReader(f):
            if row.get(MONITOR):
                scores[int(row["epoch"])] = float(row[MONITOR])
    # Validated (ValidateFromMiddleEpoch): the second half of the epochs, each once.
    assert sorted(scores) == list(range(trained.epochs // 2, trained.epochs))
    best = max(scores.values())
    assert trained.best_epoch == max(e for e, v in scores.items() if v == best)
    assert best > 0, scores  # a model that sees: its selection score is not a 0-tie


def test_the_body_trains_at_lr_and_the_fpn_and_heads_at_the_head_factor(trained):
    """The run's own saved optimizer state: the body's trainable parameters at `lr`, the FPN's, RPN's and
    box head's at lr x head_lr_factor (0.5 for Lite0), each parameter in exactly one group."""
    optimizer = torch.load(trained.checkpoint, map_location="cpu", weights_only=False)["optimizer_states"][0]
    saved = {g["name"]: g for g in optimizer["param_groups"]}
    assert trained.head_lr_factor == 0.5 and list(saved) == [BODY_GROUP, HEADS_GROUP]
    assert saved[BODY_GROUP]["initial_lr"] == pytest.approx(trained.lr)
    assert saved[HEADS_GROUP]["initial_lr"] == pytest.approx(trained.lr * 0.5)
    detector = load_checkpoint(trained.checkpoint).model

    def trainable(*parts):
        return sum(p.requires_grad for part in parts for p in part.parameters())

    assert len(saved[BODY_GROUP]["params"]) == trainable(detector.backbone.body) > 0
    heads = (detector.backbone.fpn, detector.rpn, detector.roi_heads)
    assert (
        len(saved[HEADS_GROUP]["params"])
        == trainable(*heads)
        == trainable(detector) - trainable(detector.backbone.body)
    )


def test_ties_go_to_the_later_epoch_and_worse_never_wins():
    callback = BestCheckpoint(monitor=MONITOR, mode="max")
    assert callback.check_monitor_top_k(None, torch.tensor(0.0))  # the first epoch is always kept
    callback.best_k_models = {"epoch0.ckpt": torch.tensor(0.0)}
    callback.kth_best_model_path = "epoch0.ckpt"
    assert callback.check_monitor_top_k(None, torch.tensor(0.0))  # all-zero tie: the later epoch
    assert callback.check_monitor_top_k(None, torch.tensor(0.2))
    callback.best_k_models = {"epoch1.ckpt": torch.tensor(0.2)}
    callback.kth_best_model_path = "epoch1.ckpt"
    assert not callback.check_monitor_top_k(None, torch.tensor(0.1))
    assert not callback.check_monitor_top_k(None, None)


def test_dry_run_resolves_the_data_without_training(tmp_path, capsys):
    from helpers.train.run import main

    assert main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dataset"], report["images"], report["boxes"]) == ("sample", 6, 12)
    # Fold 0 of 5: test is a fifth of each class of object photos (29) + 2 of the 6 fridge images;
    # validation 15% of the rest per class (16) + 1 fridge image; 3 fridge images and 89 photos train.
    assert len(report["test_real_images"]) == 31 and report["test_real_boxes"] == 33
    assert len(report["valid_real_images"]) == 17 and report["valid_real_boxes"] == 18
    assert len(report["train_real_images"]) == 92 and report["train_object_photos"] == 89
    assert report["valid_synthetic_images"] >= 20
    assert not list(tmp_path.iterdir())  # nothing written, nothing trained


def test_pipeline_reuses_a_run_only_when_its_configuration_matches(trained):
    from helpers.pipeline import steps

    config = steps.train_config().as_record()
    assert trained.config == config  # what summary.json records is what the pipeline would train
    assert steps.ensure_trained() == trained  # same configuration: reused, not retrained
    assert (config["model"], config["dataset"], config["batch_size"]) == (LITE0_MODEL, "sample", 2)
    # Its CPU time (every thread of the process, tests/test_clocks.py) is measured and at most wall x CPUs;
    # how much of the wall time it is depends on what else the host runs, so that is not asserted.
    assert 0 < trained.cpu_seconds <= trained.seconds * os.cpu_count()


@pytest.mark.slow
def test_training_on_a_downloaded_fridge_zip_uses_and_records_it(tmp_path, monkeypatch, fridge_zip):
    """--dataset fridge with FRIDGE_DATA_URL pointing at a zip of the official archive's shape: the run
    trains on its three parts and says so in summary.json, the checkpoint and the ONNX metadata."""
    from helpers.export.onnx_export import export_checkpoint
    from helpers.runtime.model import Detector
    from helpers.train.config import TrainConfig
    from helpers.train.run import train

    archive = fridge_zip()
    monkeypatch.setenv(fridge_data.URL_VARIABLE, archive.as_uri())
    config = TrainConfig.quick(
        dataset="fridge", epochs=1, out_dir=str(tmp_path / "run"), data_cache=str(tmp_path / "cache")
    )
    summary = train(config)
    data = summary.data
    assert (data["dataset"], data["url"], data["images"], data["boxes"]) == ("fridge", archive.as_uri(), 128, 256)
    assert summary.n_train + summary.n_valid_real + summary.n_test_real == 128 and summary.n_valid_synthetic == 0
    assert min(summary.n_train, summary.n_valid_real, summary.n_test_real) >= 10
    assert data["train_synthetic_images"] == 0 and not (tmp_path / "run" / "synthetic").exists()
    split = fridge_data.Split.read(tmp_path / "run" / "split.json")  # what export, INT8 and the notebooks read
    assert (len(split.train), len(split.valid), len(split.test)) == (
        summary.n_train,
        summary.n_valid_real,
        summary.n_test_real,
    )
    assert split.synthetic_holdout is None and split.root.is_relative_to(tmp_path / "cache")
    assert len(split.evaluation()) == summary.n_test_real
    model = export_checkpoint(summary.checkpoint, tmp_path / "model.onnx")
    assert (
        Detector(model).metadata["data"]
        == f"fridge ({archive.as_uri()})"
        == load_checkpoint(summary.checkpoint).run.data_used
    )


def test_an_unreachable_fridge_dataset_is_recorded_as_the_sample_fallback(tmp_path, monkeypatch, capsys):
    from helpers.train.run import main

    monkeypatch.setenv(fridge_data.URL_VARIABLE, (tmp_path / "absent.zip").as_uri())
    assert main(["--dataset", "fridge", "--dry-run", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["requested"], report["dataset"], report["images"]) == ("fridge", "sample", 6)
    assert report["description"].startswith("sample (fridge unavailable: URLError")
    assert captured.err.count("could not be downloaded") == 1


@pytest.mark.slow  # two training processes: about a minute
def test_cpu_ddp_with_two_processes_trains_one_epoch_and_reports_once(tmp_path, fridge_photos_coco):
    """Lightning's DDP on CPU (gloo), launched the way users launch it: the CLI with --devices 2.
    About 20 s on CI's 2 cores. The batch size is per device, so each optimizer step sees 2 x 2 images."""
    import subprocess
    import sys

    out = tmp_path / "ddp"  # on the 6 fridge photos: the launch is under test, not the model
    command = [sys.executable, "-m", "helpers", "train", "--epochs", "1", "--dataset", str(fridge_photos_coco)]
    command += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
    assert done.stdout.count("epoch 1/1:") == 1  # only rank 0 reports
    summary = RunSummary.load(out / "summary.json")
    assert summary.world_size == 2 and summary.config["devices"] == 2
    assert summary.optimizer_steps == math.ceil(summary.n_train / (2 * summary.batch_size))
    state = torch.load(out / "best.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 0 and state["global_step"] == summary.optimizer_steps


def test_the_split_record_lists_every_part_and_no_training_image_shows_a_test_or_validation_photo(tmp_path):
    """Validation and test photos appear in no training image or composite, and split.json names each
    of them: test is what every result is judged on, validation what chose the checkpoint and threshold."""
    from helpers.data.synthetic import source_photos
    from helpers.paths import split_file
    from helpers.train.config import TrainConfig
    from helpers.train.data import prepare_data, synthetic_dir

    config = TrainConfig.quick(out_dir=str(tmp_path))
    data = prepare_data(config)
    data.split(tmp_path).write(split_file(tmp_path))
    split = fridge_data.Split.read(split_file(tmp_path))
    test = {r.image_path.name for r in split.evaluation()}
    valid = {r.image_path.name for r in split.validation()}
    assert test == set(split.test) == {r.image_path.name for r in data.test_real}
    assert valid == set(split.valid) == {r.image_path.name for r in data.valid_real}
    assert len(test) >= 20 and not test & valid
    assert {"13.jpg", "15.jpg"} <= test and "11.jpg" in valid  # fold 0 of seed 42's fridge photos
    for unseen in (test, valid):
        assert not unseen & {r.image_path.name for r in data.train}
        assert not unseen & source_photos(synthetic_dir(tmp_path, "train"))
    assert source_photos(synthetic_dir(tmp_path, "valid")) <= valid  # the synthetic hold-out: validation objects
    assert [r.image_path.name for r in split.real("train")] == list(split.train)


def test_an_unset_head_factor_halves_lite0s_new_layers_only():
    """Lite0's FPN and heads start from scratch (half rate, measured); the torchvision models' come
    pretrained with their body (equal rates, as before the factor existed). A set factor is kept."""
    assert [resolve_head_lr_factor(None, name) for name in (LITE0_MODEL, BLOG_MODEL, SMALL_MODEL)] == [0.5, 1.0, 1.0]
    assert resolve_head_lr_factor(2.0, LITE0_MODEL) == 2.0


def test_a_run_summary_saves_and_loads_as_summary_json_with_its_field_names(tmp_path):
    """summary.json keeps the keys (and order) the dict had; RunSummary.load reads it back equal."""
    names = [field.name for field in dataclasses.fields(RunSummary)]
    assert names[:4] == ["config", "config_hash", "code", "finished"] and names[-1] == "metrics_csv"
    summary = RunSummary(**{name: i for i, name in enumerate(names)})
    summary.save(tmp_path / "summary.json")
    assert list(json.loads((tmp_path / "summary.json").read_text())) == names
    assert RunSummary.load(tmp_path / "summary.json") == summary
