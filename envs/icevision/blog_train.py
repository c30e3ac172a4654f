"""The blog post's IceVision training script, run offline in the legacy lane (Python 3.8, icevision 0.12).

Runs in .venv-icevision only (built and driven by helpers/baselines/icevision_lane.py: `make icevision`); the main project never imports IceVision.
It writes, into --out:

* model.onnx + class_map.json exactly as the blog does (Lightning `to_onnx`, opset 11;
  `json.dump(parser.class_map._class2id)`);
* reference.npz + reference.json: IceVision's own outputs that the main environment's tests compare
  against: the decoded pixels and its valid transforms for every image in data/, its `predict` on the
  sample images;
* versions.json: the library versions that produced them.

Changes from the blog's code, each forced by this machine or by making the comparison meaningful:

1. Data: `icedata.load_data(url)` needs the internet; the parser reads the bundled data/fridge-sample.
2. Weights: `pretrained=True` downloads ImageNet weights; here the backbone starts from random weights.
3. `score_thresh=0.0` is passed to the torchvision RetinaNet: a RetinaNet trained from scratch for a few
   epochs scores every box below torchvision's 0.05 default, so the exported model would return nothing
   and there would be nothing to compare. The threshold is a constant inside the ONNX graph either way.
4. Fonts: IceVision downloads SpaceGrotesk at import and yolov5 downloads Arial.ttf. HOME and
   YOLOV5_CONFIG_DIR point at a lane-private folder holding matplotlib's DejaVuSans under those names
   (only used for drawing, which this script does not do).
5. `show_samples` / `show_batch` are left out (no display); the split and training are seeded.
6. IceVision 0.12 moved `models.retinanet` (0.8, the blog's) to `models.torchvision.retinanet`, and the
   backbone is passed as the config object (`resnet50_fpn(pretrained=False)`), not called again.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

IMAGE_SIZE = 384  # the blog's: EfficientDet needs a multiple of 128
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "fridge-sample"
THUMBNAILS = REPO / "data" / "fridge-classification-small150"


def offline_fonts(home: Path) -> None:
    """Give IceVision and yolov5 the font files they would otherwise download at import."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    targets = [home / ".icevision" / "fonts" / "SpaceGrotesk-Medium.ttf", home / "yolov5" / "Arial.ttf"]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(font, target)
    os.environ["HOME"] = str(home)
    os.environ["YOLOV5_CONFIG_DIR"] = str(home / "yolov5")


def main(argv=None) -> int:
    parser_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser_.add_argument("--out", type=Path, required=True)
    parser_.add_argument("--epochs", type=int, default=20, help="the blog's 20; quick mode uses 2")
    parser_.add_argument("--seed", type=int, default=0)
    args = parser_.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    offline_fonts(args.out / "home")

    import numpy as np
    import pytorch_lightning as pl
    import torch
    from icevision.all import COCOMetric, COCOMetricType, Dataset, RandomSplitter, models, parsers, tfms
    from icevision.utils.imageio import open_img
    from torch.optim import SGD

    pl.seed_everything(args.seed)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))

    # --- the blog's recipe -------------------------------------------------------------------------
    parser = parsers.VOCBBoxParser(annotations_dir=SAMPLE / "annotations", images_dir=SAMPLE / "images")
    train_records, valid_records = parser.parse(data_splitter=RandomSplitter([0.8, 0.2], seed=args.seed))

    train_tfms = tfms.A.Adapter([*tfms.A.aug_tfms(size=IMAGE_SIZE, presize=512), tfms.A.Normalize()])
    valid_tfms = tfms.A.Adapter([*tfms.A.resize_and_pad(IMAGE_SIZE), tfms.A.Normalize()])
    train_ds = Dataset(train_records, train_tfms)
    valid_ds = Dataset(valid_records, valid_tfms)

    model_type = models.torchvision.retinanet  # the blog's `models.retinanet` (IceVision 0.8) moved
    backbone = model_type.backbones.resnet50_fpn(pretrained=False)
    model = model_type.model(backbone=backbone, num_classes=len(parser.class_map), score_thresh=0.0)

    train_dl = model_type.train_dl(train_ds, batch_size=8, num_workers=0, shuffle=True)
    valid_dl = model_type.valid_dl(valid_ds, batch_size=8, num_workers=0, shuffle=False)

    class LightModel(model_type.lightning.ModelAdapter):
        def configure_optimizers(self):
            return SGD(self.parameters(), lr=1e-4)

    light_model = LightModel(model, metrics=[COCOMetric(metric_type=COCOMetricType.bbox)])
    trainer = pl.Trainer(max_epochs=args.epochs, logger=False, checkpoint_callback=False, progress_bar_refresh_rate=0)
    trainer.fit(light_model, train_dl, valid_dl)

    light_model.to_onnx(
        str(args.out / "model.onnx"),
        input_sample=torch.randn((1, 3, IMAGE_SIZE, IMAGE_SIZE)),
        opset_version=11,
    )
    with open(args.out / "class_map.json", "w") as file:
        json.dump(parser.class_map._class2id, file)

    # --- IceVision's own references for the main environment's tests ----------------------------------
    sample_paths = sorted(SAMPLE.glob("images/*.jpg"))
    all_paths = sample_paths + sorted(THUMBNAILS.glob("*.jpg"))
    images = [np.array(open_img(path)) for path in all_paths]  # IceVision's loader: EXIF transpose, RGB

    letterbox_only = tfms.A.Adapter([*tfms.A.resize_and_pad(IMAGE_SIZE)])
    letterboxed = np.stack([record.img for record in Dataset.from_images(images, letterbox_only)])
    normalized = np.stack([record.img for record in Dataset.from_images(images[: len(sample_paths)], valid_tfms)])
    resize, pad = tfms.A.resize_and_pad(IMAGE_SIZE)
    geometry = []
    for image in images:
        resized = resize(image=image)["image"]
        params = pad.update_params({}, image=resized)
        geometry.append(
            [image.shape[0], image.shape[1], resized.shape[0], resized.shape[1], params["pad_top"], params["pad_left"]]
        )

    sample_ds = Dataset.from_images(images[: len(sample_paths)], valid_tfms, class_map=parser.class_map)
    predictions = model_type.predict(model, sample_ds, detection_threshold=0.0, keep_images=False)
    reference = {"images": [str(p.relative_to(REPO)) for p in all_paths], "predictions": []}
    for path, pred in zip(sample_paths, predictions):
        detection = pred.pred.detection
        reference["predictions"].append(
            {
                "image": str(path.relative_to(REPO)),
                "boxes": [list(map(float, b.xyxy)) for b in detection.bboxes],
                "scores": [float(s) for s in detection.scores],
                "labels": [int(i) for i in detection.label_ids],
            }
        )
    np.savez_compressed(
        args.out / "reference.npz",
        letterboxed=letterboxed.astype(np.uint8),
        normalized=normalized.astype(np.float32),
        geometry=np.array(geometry, dtype=np.int64),
        # Pillow 8.4's JPEG decoder is not the main environment's: keep its pixels so that the two
        # pipelines can also be compared from identical pixels.
        **{f"decoded_{i}": image for i, image in enumerate(images)},
    )
    (args.out / "reference.json").write_text(json.dumps(reference))

    import albumentations
    import cv2
    import icevision
    import PIL

    versions = {
        "python": sys.version.split()[0],
        "icevision": icevision.__version__,
        "pytorch_lightning": pl.__version__,
        "torch": torch.__version__,
        "albumentations": albumentations.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "epochs": args.epochs,
    }
    (args.out / "versions.json").write_text(json.dumps(versions, indent=2))
    print(json.dumps(versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
