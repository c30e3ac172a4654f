"""RoIAlign's input gradient on a CPU as one sparse product: torchvision's result, a quarter of its time.

torchvision's CPU kernel for the backward of `roi_align` recomputes every sample's bilinear weights for
each channel and adds them one at a time: a quarter of a quick-mode training step. The weights depend
on the box, not on the channel, so here they are computed once per box, as a sparse matrix from
feature-map pixels to pooled bins, and the gradient is that matrix times the pooled gradient. Same sample positions, same weights, same order of additions per pixel: for sampling grids of
1, 2 or 4 samples a side (the detector's is 2) the result is bit for bit torchvision's, which the tests
check against torchvision's own kernel. That rests on the sparse product adding each pixel's terms in
order, from zero, without fused multiply-adds, as PyTorch's MKL-backed CPU product does here (checked
with 1 and 2 threads); another build that did not would still agree to rounding.

`fast_roi_align_backward()` installs it, for as long as the context lasts, as the CPU kernel of
`torchvision::_roi_align_backward`, the op that torchvision's autograd calls: the forward pass, ONNX
export, other devices and torchvision's autograd logic are untouched.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
import torchvision  # noqa: F401  (registers the torchvision ops this module overrides a kernel of)

#: Adaptive sampling grids (sampling_ratio <= 0) pad each box to the largest grid among a call's boxes;
#: above this many padded samples a call is split (each sample holds 4 pixels, their weights and bins).
ADAPTIVE_SAMPLES_PER_CALL = 1 << 20  # about 160 MB of index and weight tensors


def roi_align_input_grad(
    grad: torch.Tensor,
    rois: torch.Tensor,
    spatial_scale: float,
    pooled_height: int,
    pooled_width: int,
    batch_size: int,
    channels: int,
    height: int,
    width: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """The gradient of `roi_align`'s input (batch_size, channels, height, width) given the gradient of its
    output (rois, channels, pooled_height, pooled_width): `torchvision::_roi_align_backward`'s signature
    and semantics (torchvision/csrc/ops/cpu/roi_align_kernel.cpp), written in tensor operations."""
    args = (spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio, aligned)
    if grad.dtype not in (torch.float32, torch.float64):  # PyTorch's sparse CPU product has no half precision
        return roi_align_input_grad(grad.float(), rois.float(), *args).to(grad.dtype)
    n_rois = rois.shape[0]
    if n_rois == 0:
        return grad.new_zeros(batch_size, channels, height, width)
    start_x, start_y, bin_height, bin_width = _bins(rois, spatial_scale, pooled_height, pooled_width, aligned)
    grid_height, grid_width = _grids(bin_height, bin_width, sampling_ratio)
    halves = _adaptive_halves(grid_height, grid_width, pooled_height * pooled_width) if sampling_ratio <= 0 else None
    if halves is not None:
        return sum(roi_align_input_grad(grad[half], rois[half], *args) for half in halves)
    # (box, bin, sample) per axis, broadcast to (box, bin_y, bin_x, sample_y, sample_x).
    dtype, bins = grad.dtype, n_rois * pooled_height * pooled_width
    along_y = [t[:, :, None, :, None] for t in _axis(start_y, bin_height, grid_height, pooled_height, height, dtype)]
    along_x = [t[:, None, :, None, :] for t in _axis(start_x, bin_width, grid_width, pooled_width, width, dtype)]
    count = (grid_height * grid_width).clamp(min=1).to(dtype)
    pixel, pooled_bin, weight = _samples(rois, along_y, along_x, count, height, width)
    to_pixels = _pixels_from_bins(pixel, pooled_bin, weight, batch_size * height * width, bins)
    per_bin = grad.permute(0, 2, 3, 1).reshape(bins, channels)
    per_pixel = torch.sparse.mm(to_pixels, per_bin)
    return per_pixel.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2).contiguous()


def _bins(rois: torch.Tensor, spatial_scale: float, pooled_height: int, pooled_width: int, aligned: bool):
    """Per box: its start on the feature map (x, y) and its bins' height and width, as torchvision has them."""
    offset = 0.5 if aligned else 0.0
    start_x = rois[:, 1] * spatial_scale - offset
    start_y = rois[:, 2] * spatial_scale - offset
    roi_width = rois[:, 3] * spatial_scale - offset - start_x
    roi_height = rois[:, 4] * spatial_scale - offset - start_y
    if not aligned:  # torchvision's legacy boxes are at least one pixel a side
        roi_width, roi_height = roi_width.clamp(min=1.0), roi_height.clamp(min=1.0)
    return start_x, start_y, roi_height / pooled_height, roi_width / pooled_width


def _grids(bin_height: torch.Tensor, bin_width: torch.Tensor, sampling_ratio: int):
    """Per box: the sampling grid's samples a side (height, width)."""
    if sampling_ratio > 0:
        grid = torch.full(bin_height.shape, sampling_ratio, dtype=torch.long)
        return grid, grid
    return torch.ceil(bin_height).long(), torch.ceil(bin_width).long()  # adaptive: about one per pixel


def _adaptive_halves(grid_height: torch.Tensor, grid_width: torch.Tensor, bins_per_box: int):
    """Every box is padded to the call's largest grid: past ADAPTIVE_SAMPLES_PER_CALL, the boxes' indices
    in two halves, the smaller grids together (the sum then rounds differently, as adaptive grids may
    anyway); None when one call holds them all."""
    n_rois = grid_height.shape[0]
    padded = n_rois * bins_per_box * max(int(grid_height.max()), 0) * max(int(grid_width.max()), 0)
    if n_rois <= 1 or padded <= ADAPTIVE_SAMPLES_PER_CALL:
        return None
    by_grid = torch.argsort(grid_height.clamp(min=0) * grid_width.clamp(min=0))
    return by_grid[: n_rois // 2], by_grid[n_rois // 2 :]


def _axis(start, bin_size, grid, pooled: int, size: int, dtype: torch.dtype):
    """Per box, bin and sample along one axis: whether the sample counts, its two neighbouring pixel
    rows (or columns) and their weights, as torchvision's bilinear_interpolate_gradient has them."""
    samples = max(int(grid.max()), 0)  # a grid is negative for an inverted aligned box: no samples
    bins = torch.arange(pooled, dtype=dtype)[None, :, None]
    steps = torch.arange(samples, dtype=dtype)[None, None, :]
    position = start[:, None, None] + bins * bin_size[:, None, None]
    position = position + (steps + 0.5) * bin_size[:, None, None] / grid[:, None, None].to(dtype)
    inside = (position >= -1.0) & (position <= size) & (steps < grid[:, None, None])
    position = position.clamp(min=0.0)
    low = position.long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    high = torch.where(at_edge, low, low + 1)
    fraction = torch.where(at_edge, low.to(dtype), position) - low
    return inside, low, high, 1 - fraction, fraction


def _samples(rois, along_y, along_x, count, height, width):
    """The counted samples' four neighbours, flat: (input pixel, pooled bin, weight / count), in
    torchvision's order of addition."""
    inside_y, y_low, y_high, weight_y_low, weight_y_high = along_y
    inside_x, x_low, x_high, weight_x_low, weight_x_high = along_x
    n_rois, pooled_height, pooled_width = rois.shape[0], y_low.shape[1], x_low.shape[2]
    first_pixel = (rois[:, 0].long() * height * width)[:, None, None, None, None]
    pixel = torch.stack(
        [
            first_pixel + y_low * width + x_low,
            first_pixel + y_low * width + x_high,
            first_pixel + y_high * width + x_low,
            first_pixel + y_high * width + x_high,
        ],
        dim=-1,
    )
    # torchvision adds (gradient x weight) / count; here weight / count multiplies the gradient in the
    # product. Dividing by a power of two (grids of 1, 2 or 4 a side) is exact, so the two round alike.
    weight = (
        torch.stack(
            [
                weight_y_low * weight_x_low,
                weight_y_low * weight_x_high,
                weight_y_high * weight_x_low,
                weight_y_high * weight_x_high,
            ],
            dim=-1,
        )
        / count[:, None, None, None, None, None]
    )
    pooled_bin = torch.arange(n_rois * pooled_height * pooled_width).reshape(n_rois, pooled_height, pooled_width)
    pooled_bin = pooled_bin[:, :, :, None, None, None].expand_as(pixel)
    counted = (inside_y & inside_x)[..., None].expand_as(pixel)
    return pixel[counted], pooled_bin[counted], weight[counted]


def _pixels_from_bins(pixel, pooled_bin, weight, pixels: int, bins: int) -> torch.Tensor:
    """The sparse (pixels, bins) matrix of the weights: rows by pixel; within a pixel, the additions
    keep torchvision's order (a stable sort)."""
    pixel, order = torch.sort(pixel, stable=True)
    rows = torch.searchsorted(pixel, torch.arange(pixels + 1))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(rows, pooled_bin[order], weight[order], (pixels, bins), check_invariants=False)


@contextlib.contextmanager
def fast_roi_align_backward() -> Iterator[None]:
    """Within the context, torchvision's RoIAlign backward on a CPU runs `roi_align_input_grad`."""
    library = torch.library.Library("torchvision", "IMPL")
    library.impl("_roi_align_backward", roi_align_input_grad, "CPU")
    try:
        yield
    finally:
        # Restores torchvision's kernel: what torch.library._scoped_library does (private; torch 2.14.1).
        library._destroy()
