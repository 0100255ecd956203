"""Sliding-window inference for images larger than a tile, built on `F.unfold` / `F.fold`.

`F.unfold` cuts a padded band of the image into overlapping tiles (columns), the network runs on
at most `batch_size` tiles at a time, and `F.fold` sums the tiles' logits back into place. Fold
adds overlapping contributions, so `fold(unfold(x)) == divisor · x` where the divisor is
`fold(unfold(ones))`, the number of tiles covering each pixel; dividing by it (or by the folded
window weights) averages the overlaps.

The image is processed one band of tile rows at a time, and the rows that no later band touches
are finalised, so memory is bounded by one band (tile height × image width), not by the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Axis:
    """Tiling along one axis: tile length, stride, count, and padded length."""

    tile: int
    stride: int
    count: int

    @property
    def padded(self) -> int:
        return (self.count - 1) * self.stride + self.tile

    @classmethod
    def plan(cls, size: int, tile: int, overlap: int) -> Axis:
        if tile < 1 or not 0 <= overlap < tile:
            raise ValueError(f"need tile ≥ 1 and 0 ≤ overlap < tile, got {tile=} {overlap=}")
        if size <= tile:
            return cls(size, size, 1)
        stride = tile - overlap
        return cls(tile, stride, math.ceil((size - tile) / stride) + 1)


def window_weights(height: int, width: int, kind: str) -> torch.Tensor:
    """(height, width) blending weights: 'uniform' ones, or a 'hann'-like taper that stays > 0."""
    if kind == "uniform":
        return torch.ones(height, width)
    if kind == "hann":
        def ramp(n: int) -> torch.Tensor:
            return 0.1 + 0.9 * torch.hann_window(n + 2, periodic=False)[1:-1] if n > 2 else \
                torch.ones(n)
        return torch.outer(ramp(height), ramp(width))
    raise ValueError(f"unknown window {kind!r}; use 'uniform' or 'hann'")


@torch.inference_mode()
def _bands(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    num_classes: int,
    tile: int,
    overlap: int,
    batch_size: int,
    window: str,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Yield averaged logits (1, K, rows, W) for consecutive finished row blocks of the image."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, C, H, W), got {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    _, channels, height, width = image.shape
    rows, cols = Axis.plan(height, tile, overlap), Axis.plan(width, tile, overlap)
    th, tw = rows.tile, cols.tile
    weight = window_weights(th, tw, window).to(image.device)  # float32, whatever the input
    # Per-tile weights as fold columns: (1, th*tw, n_cols) → summed in place by fold.
    weight_cols = weight.reshape(1, th * tw, 1).expand(1, th * tw, cols.count)
    band_weight = F.fold(weight_cols, (th, cols.padded), (th, tw), stride=(1, cols.stride))

    # Rolling buffers over the current band's rows only: (1, K, th, W_padded).
    acc = torch.zeros(1, num_classes, th, cols.padded, device=image.device)
    norm = torch.zeros(1, 1, th, cols.padded, device=image.device)
    for r in range(rows.count):
        top = r * rows.stride
        band = image[:, :, top : min(top + th, height), :]
        if normalize is not None:  # raw (e.g. uint8) image: normalise one band at a time
            band = normalize(band)
        band = F.pad(band, (0, cols.padded - width, 0, th - band.shape[2]), mode="replicate")
        # Unfold, run and fold `batch_size` tiles at a time into their span of the band, so
        # transient memory is one tile batch, not a band's worth of tiles and logits.
        for first in range(0, cols.count, batch_size):
            n = min(batch_size, cols.count - first)
            x0, span = first * cols.stride, (n - 1) * cols.stride + tw
            tiles = F.unfold(band[..., x0 : x0 + span], (th, tw), stride=(1, cols.stride))
            tiles = tiles[0].T.reshape(n, channels, th, tw)  # (n, C, th, tw)
            logits = model(tiles).float() * weight  # (n, K, th, tw)
            logit_cols = logits.reshape(n, num_classes * th * tw).T.unsqueeze(0)
            acc[..., x0 : x0 + span] += F.fold(logit_cols, (th, span), (th, tw),
                                               stride=(1, cols.stride))
        norm += band_weight
        # Rows above the next band's top are final; the rest carry over into the next band.
        final = rows.stride if r < rows.count - 1 else th
        final = min(final, height - top)
        yield acc[:, :, :final, :width] / norm[:, :, :final, :width]
        if r < rows.count - 1:
            acc = torch.cat([acc[:, :, rows.stride :],
                             acc.new_zeros(1, num_classes, rows.stride, cols.padded)], dim=2)
            norm = torch.cat([norm[:, :, rows.stride :],
                              norm.new_zeros(1, 1, rows.stride, cols.padded)], dim=2)


def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    num_classes: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    window: str = "uniform",
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Logits (1, K, H, W) for an image (1, C, H, W), tile by tile.

    The image is either normalised already, or raw with `normalize` mapping a (1, C, h, W) band
    to its normalised float version (then no float copy of the whole image ever exists).
    """
    return torch.cat(list(_bands(model, image, num_classes, tile, overlap, batch_size, window,
                                 normalize)), dim=2)


def sliding_window_mask(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    num_classes: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    window: str = "uniform",
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Class indices (H, W) as uint8 for an image (1, C, H, W), tile by tile (see above)."""
    height, width = image.shape[-2:]
    mask = torch.empty(height, width, dtype=torch.uint8)
    row = 0
    for block in _bands(model, image, num_classes, tile, overlap, batch_size, window, normalize):
        n = block.shape[2]
        mask[row : row + n] = block[0].argmax(0).to(torch.uint8).cpu()
        row += n
    return mask
