"""The faster RoIAlign backward computes torchvision's gradients: bit for bit in a real training step."""

import pytest
import torch
from torchvision.ops import roi_align

from helpers.runtime.classmap import ClassMap
from helpers.runtime.config import FRIDGE_CLASSES, PREPROCESS
from helpers.train import roi_align_grad
from helpers.train.data import DetectionDataset, collate
from helpers.train.models import LITE0_MODEL, build_detector
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
    smaller than a pixel, zero-sized and inverted, on both images of the batch."""
    return torch.tensor(
        [
            [0, 16.0, 24.0, 200.0, 150.0],
            [1, -30.0, 10.0, 90.0, 300.0],
            [0, 300.0, 200.0, 460.0, 420.0],
            [1, 500.0, 500.0, 600.0, 560.0],
            [0, 40.0, 40.0, 43.0, 44.0],
            [1, 64.0, 64.0, 64.0, 64.0],
            [0, 0.0, 0.0, 8 * 47.0, 8 * 33.0],
            [1, 100.0, 120.0, 60.0, 50.0],
        ]
    )


def _compare(features, boxes, spatial_scale, pooled, sampling_ratio, aligned, upstream_layout=lambda t: t):
    """(torchvision's input gradient, ours) for one roi_align call and a seeded upstream gradient."""
    pooled_out = roi_align(features, boxes, pooled, spatial_scale, sampling_ratio, aligned)
    upstream = upstream_layout(torch.randn(pooled_out.shape, generator=torch.Generator().manual_seed(1)))
    upstream = upstream.to(pooled_out.dtype)
    (expected,) = torch.autograd.grad(pooled_out, features, upstream, retain_graph=True)
    with roi_align_grad.fast_roi_align_backward():
        (actual,) = torch.autograd.grad(pooled_out, features, upstream)
    return expected, actual


@pytest.mark.parametrize(
    ("sampling_ratio", "aligned", "dtype", "exact"),
    [
        (2, False, torch.float32, True),
        (1, True, torch.float32, True),
        (4, True, torch.float32, True),
        (2, True, torch.float64, True),
        (0, False, torch.float32, False),
        (0, True, torch.float32, False),
        (3, False, torch.float32, False),
    ],
)
def test_the_input_gradient_equals_torchvisions_kernel(sampling_ratio, aligned, dtype, exact, calls):
    """torchvision's semantics at the edges. Grids of 1, 2 or 4 samples a side divide by a power of two,
    so the additions round alike: bit for bit. Others (3, or adaptive) agree to rounding."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 16, 34, 48, generator=generator, dtype=dtype, requires_grad=True)
    expected, actual = _compare(features, _boxes().to(dtype), 0.125, 7, sampling_ratio, aligned)
    assert calls == [len(_boxes())]
    if exact:
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert expected.abs().sum() > 0


def test_samples_on_the_last_counted_positions(calls):
    """One sample per box, at its centre: on -1 and on the map's height or width (still counted, with a
    clamped position), just beyond them (not counted), on 0 and on the last row or column."""
    height, width = 5, 6
    centres = [-1.0001, -1.0, 0.0, height - 1.0, height, height + 0.0001]
    boxes = [[0, 2.0, c - 1, 3.0, c + 1] for c in centres] + [[0, c - 1, 2.0, c + 1, 3.0] for c in centres[:3]]
    boxes += [[0, c - 1, 2.0, c + 1, 3.0] for c in (width - 1.0, width, width + 0.0001)]
    features = torch.randn(1, 3, height, width, requires_grad=True)
    for aligned in (False, True):
        shifted = torch.tensor(boxes) + torch.tensor([0, 0.5, 0.5, 0.5, 0.5]) * aligned
        expected, actual = _compare(features, shifted, 1.0, 1, 1, aligned)
        assert torch.equal(actual, expected)
    assert len(calls) == 2


def test_a_non_contiguous_gradient_and_half_precision(calls):
    """A strided upstream gradient: bit for bit. Half precision: as close to the exact gradient as
    torchvision's."""
    features = torch.randn(2, 16, 34, 48, requires_grad=True)
    expected, actual = _compare(
        features, _boxes(), 0.125, 7, 2, False, lambda t: t.transpose(2, 3).contiguous().transpose(2, 3)
    )
    assert torch.equal(actual, expected)
    # Half precision: torchvision's kernel adds in half, ours in single precision, then rounds to half.
    half = features.detach().half().requires_grad_()
    torchvisions, ours = _compare(half, _boxes().half(), 0.125, 7, 2, False)
    double = features.detach().double().requires_grad_()
    exact, _ = _compare(double, _boxes().double(), 0.125, 7, 2, False)
    assert ours.dtype == torch.float16
    assert (ours.double() - exact).abs().max() <= (torchvisions.double() - exact).abs().max()


def test_adaptive_grids_past_the_padding_bound_split_into_calls(monkeypatch, calls):
    """Large and small boxes together: split until each call pads few samples; the same gradient."""
    monkeypatch.setattr(roi_align_grad, "ADAPTIVE_SAMPLES_PER_CALL", 2000)
    features = torch.randn(2, 8, 34, 48, requires_grad=True)
    expected, actual = _compare(features, _boxes(), 0.125, 7, 0, False)
    assert len(calls) > 1 and calls[0] == len(_boxes())
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_no_boxes_no_gradient_and_the_context_restores_torchvisions_kernel(calls):
    features = torch.randn(1, 4, 8, 8, requires_grad=True)
    with roi_align_grad.fast_roi_align_backward():
        roi_align(features, torch.zeros(0, 5), 7, 0.25, 2).sum().backward()
    assert calls == [0] and torch.equal(features.grad, torch.zeros_like(features))
    # Only inverted boxes, aligned, adaptive: every grid is negative, so no sample counts.
    expected, actual = _compare(features, torch.tensor([[0, 100.0, 100.0, 10.0, 10.0]]), 0.25, 7, 0, True)
    assert calls == [0, 1] and torch.equal(actual, expected)
    roi_align(features, torch.tensor([[0, 1.0, 1.0, 20.0, 30.0]]), 7, 0.25, 2).sum().backward()
    assert calls == [0, 1]  # torchvision's own kernel again
    assert features.grad.abs().sum() > 0
