"""Letterbox geometry: where albumentations' LongestMaxSize + PadIfNeeded(center) put an image in the
square model input, and how boxes map back. Stdlib only."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How an original (height, width) image was placed in the square model input. `reduction` > 1:
    the pixels resized were the original decoded at 1/reduction per axis (JPEG DCT scaling, see
    helpers.runtime.decode); the scales still map original pixels to model-input pixels."""

    orig_height: int
    orig_width: int
    new_height: int
    new_width: int
    pad_top: int
    pad_left: int
    reduction: int = 1

    @property
    def scale_y(self) -> float:
        return self.new_height / (-(-self.orig_height // self.reduction) * self.reduction)

    @property
    def scale_x(self) -> float:
        return self.new_width / (-(-self.orig_width // self.reduction) * self.reduction)


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
    """albumentations LongestMaxSize(size) + PadIfNeeded(size, size, position='center')."""
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    return Letterbox(height, width, new_height, new_width, (size - new_height) // 2, (size - new_width) // 2)
