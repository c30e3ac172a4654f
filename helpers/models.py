"""torchvision detectors configured the IceVision way, with an explicit offline weights path."""

from __future__ import annotations

import sys
import urllib.error
import warnings

import torch
from torchvision.models import detection
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

#: The blog post's detector first; the small one trains on a CPU in minutes.
BLOG_MODEL = "retinanet_resnet50_fpn"
SMALL_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
MODEL_NAMES = (BLOG_MODEL, SMALL_MODEL)

OFFLINE_MESSAGE = (
    "\n" + "!" * 78 + "\n"
    "!! Pretrained weights for {name} could not be downloaded ({error}).\n"
    "!! Training FROM SCRATCH (weights=None, weights_backbone=None). Expect far lower accuracy\n"
    "!! than with weights='DEFAULT'; the checkpoint records weights='none (offline fallback)'.\n"
    + "!" * 78
)


def _replace_head(model: torch.nn.Module, name: str, num_classes: int) -> None:
    if name == BLOG_MODEL:
        head = model.head.classification_head
        model.head.classification_head = RetinaNetClassificationHead(
            in_channels=head.conv[0][0].in_channels,
            num_anchors=head.num_anchors,
            num_classes=num_classes,
        )
    else:
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, num_classes)


def build_detector(
    name: str, num_classes: int, image_size: int, weights: str = "DEFAULT"
) -> tuple[torch.nn.Module, str]:
    """-> (model, weights actually used).

    weights: "DEFAULT" = torchvision's COCO weights with a new class head (needs internet once);
    "auto" = DEFAULT, falling back loudly to random init when the download fails; "none" = random.
    The model's own transform is made an identity (IceVision's remove_internal_model_transforms):
    inputs arrive letterboxed to image_size and normalised by albumentations, so torchvision must
    not resize or normalise again, and the exported ONNX graph takes exactly the training tensor.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {MODEL_NAMES}")
    if weights not in ("DEFAULT", "auto", "none"):
        raise ValueError(f"weights must be 'DEFAULT', 'auto' or 'none', not {weights!r}")
    builder = getattr(detection, name)
    used = "none"
    model = None
    if weights in ("DEFAULT", "auto"):
        try:
            model = builder(weights="DEFAULT")
            _replace_head(model, name, num_classes)
            used = f"{name} COCO (torchvision DEFAULT)"
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            if weights == "DEFAULT":
                raise
            print(OFFLINE_MESSAGE.format(name=name, error=err), file=sys.stderr)
            warnings.warn(f"{name}: training from scratch, pretrained weights unavailable")
            used = "none (offline fallback)"
    if model is None:
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes)
    model.transform = GeneralizedRCNNTransform(
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
    )
    return model, used


def set_serving_thresholds(model: torch.nn.Module, min_score: float) -> None:
    """Thresholds for the exported graph (applied in place, so eager parity runs see them too).

    min_score: the detector's own score cut-off (torchvision default 0.05); low, so that the serving
    threshold decides. Faster R-CNN's RPN score threshold (0.05 for the mobilenet models) goes to 0:
    an image with no proposal above it (a blank image) would reach a Reshape(0, -1) in the traced
    graph, which ONNX cannot resolve for an empty tensor; with 0 the RPN always keeps its top-N.
    """
    if hasattr(model, "roi_heads"):
        model.roi_heads.score_thresh = min_score
        model.rpn.score_thresh = 0.0
    else:
        model.score_thresh = min_score
