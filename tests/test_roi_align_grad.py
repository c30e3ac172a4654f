"""The faster RoIAlign backward computes torchvision's gradients: bit for bit in a real training step."""

import pytest
import torch
from torchvision.ops import roi_align

from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS
from helpers.train import roi_align_grad
from helpers.train.models import LITE0_MODEL, build_detector
from helpers.train.run import DetectionDataset, collate
from helpers.train.transforms import train_transform


@pytest.fixture
def calls(monkeypatch) -> list:
    """Counts the calls of our kernel (the context registers whatever the module's name holds)."""
    seen = []

    def counted(*args):
        seen.append(args[1].shape[0])  # the number of boxes
        return original(*args)

    original = roi_align_grad.roi_align_input_grad
    monkeypatch.setattr(roi_align_grad, "roi_align_input_grad", counted)
    return seen


def test_a_training_step_has_torchvisions_gradients_bit_for_bit(sample_records, calls):
    """Every trained weight of the Lite0 detector gets exactly the gradient it gets with torchvision's
    kernel, on a real training batch (the sampled anchors and proposals seeded alike)."""
    class_map = ClassMap(FRIDGE_CLASSES)
    dataset = DetectionDataset(sample_records[:2], train_transform(PREPROCESS, seed=0), class_map)
    images, targets = collate([dataset[0], dataset[1]])
    model, _ = build_detector(LITE0_MODEL, class_map.num_classes, PREPROCESS.image_size)
    model.train()

    def gradients() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model.zero_grad()
        sum(model(images, targets).values()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected = gradients()
    with roi_align_grad.fast_roi_align_backward():
        actual = gradients()
    assert calls and sum(calls) == 2 * model.roi_heads.fg_bg_sampler.batch_size_per_image  # every sampled box
    assert expected.keys() == actual.keys() and any("box_head" in name for name in actual)
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, different


def _boxes() -> torch.Tensor:
    """(batch index, x1, y1, x2, y2) in input pixels (stride 8): inside, across each edge, wholly outside,
    smaller than a pixel and zero-sized, on both images of the batch."""
    return torch.tensor(
        [
            [0, 16.0, 24.0, 200.0, 150.0],
            [1, -30.0, 10.0, 90.0, 300.0],
            [0, 300.0, 200.0, 460.0, 420.0],
            [1, 500.0, 500.0, 600.0, 560.0],
            [0, 40.0, 40.0, 43.0, 44.0],
            [1, 64.0, 64.0, 64.0, 64.0],
            [0, 0.0, 0.0, 8 * 47.0, 8 * 33.0],
        ]
    )


@pytest.mark.parametrize(
    ("sampling_ratio", "aligned", "exact"),
    [(2, False, True), (1, True, True), (4, True, True), (0, False, False), (3, False, False)],
)
def test_the_input_gradient_equals_torchvisions_kernel(sampling_ratio, aligned, exact, calls):
    """torchvision's semantics at the edges. Grids of 1, 2 or 4 samples a side divide by a power of two,
    so the additions round alike: bit for bit. Others (3, or adaptive) agree to rounding."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 34, 48, generator=generator, requires_grad=True)
    pooled = roi_align(features, _boxes(), 7, 0.125, sampling_ratio, aligned)
    upstream = torch.randn(pooled.shape, generator=generator)
    (expected,) = torch.autograd.grad(pooled, features, upstream, retain_graph=True)
    with roi_align_grad.fast_roi_align_backward():
        (actual,) = torch.autograd.grad(pooled, features, upstream)
    assert calls == [len(_boxes())]
    if exact:
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().sum() > 0


def test_no_boxes_no_gradient_and_the_context_restores_torchvisions_kernel(calls):
    features = torch.randn(1, 4, 8, 8, requires_grad=True)
    with roi_align_grad.fast_roi_align_backward():
        roi_align(features, torch.zeros(0, 5), 7, 0.25, 2).sum().backward()
    assert calls == [0] and torch.equal(features.grad, torch.zeros_like(features))
    roi_align(features, torch.tensor([[0, 1.0, 1.0, 20.0, 30.0]]), 7, 0.25, 2).sum().backward()
    assert calls == [0]  # torchvision's own kernel again
    assert features.grad.abs().sum() > 0
