"""Tiled inference for images too large to run whole, with every pixel decided by one tile.

Along each axis the image is cut into the fewest tiles of at most `tile` pixels that overlap by
at least `overlap`, spread evenly (all the same length, the last ending at the border, so nothing
is padded and the work is `count × tile` per axis, a few percent over the image). Each tile
*owns* the part of it nearest its centre: neighbouring tiles split their overlap down the middle,
so a kept pixel always has at least `overlap // 2` pixels of real context on each side, and the
outputs are stitched without summing or averaging anything. Tiles are views of the image (no
copy); given a raw (e.g. uint8) image and a model that normalises its input (the service's
`Served`), no float copy of the image, or of a band of it (50 MB for a band of 8192-px rows),
ever exists: only one tile's, inside the forward.

An earlier version averaged overlapping tiles with `F.fold` over float logits; for a 640×480
image that bookkeeping alone cost twice the forward pass. `fold(unfold(x)) == divisor · x` is
still held as a premise in tests/model/test_conv_shapes.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

Model = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Axis:
    """Tiling along one axis: tiles of length `tile` starting at `starts`."""

    size: int
    tile: int
    starts: tuple[int, ...]

    @classmethod
    def plan(cls, size: int, tile: int, overlap: int) -> Axis:
        """The fewest tiles of at most `tile` pixels overlapping by at least `overlap`."""
        if tile < 1 or not 0 <= overlap < tile:
            raise ValueError(f"need tile ≥ 1 and 0 ≤ overlap < tile, got {tile=} {overlap=}")
        if size <= tile:
            return cls(size, size, (0,))
        count = math.ceil((size - overlap) / (tile - overlap))
        length = math.ceil((size + (count - 1) * overlap) / count)  # ≤ tile, even spread
        stride = (size - length) / (count - 1)
        return cls(size, length, tuple(round(i * stride) for i in range(count)))

    @property
    def computed(self) -> int:
        """Pixels the model computes along this axis (overlaps counted each time)."""
        return len(self.starts) * self.tile

    def owned(self) -> list[tuple[int, int]]:
        """Each tile's output range: overlaps are split down the middle."""
        middles = ((a + self.tile + b) // 2
                   for a, b in zip(self.starts, self.starts[1:], strict=False))
        cuts = [0, *middles, self.size]
        return list(zip(cuts, cuts[1:], strict=False))


@torch.inference_mode()
def _owned_logits(model: Model, image: torch.Tensor, tile: int, overlap: int, batch_size: int,
                  ) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """(rows, cols, logits (K, h, w)) for each tile's owned part of the image."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image shaped (1, C, H, W), got {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    height, width = image.shape[-2:]
    rows, cols = Axis.plan(height, tile, overlap), Axis.plan(width, tile, overlap)
    col_parts = list(zip(cols.starts, cols.owned(), strict=True))
    for top, (y0, y1) in zip(rows.starts, rows.owned(), strict=True):
        band = image[:, :, top:top + rows.tile]
        for first in range(0, len(col_parts), batch_size):
            group = col_parts[first:first + batch_size]
            tiles = [band[..., left:left + cols.tile] for left, _ in group]
            logits = model(tiles[0] if len(tiles) == 1 else torch.cat(tiles))  # (n, K, th, tw)
            for out, (left, (x0, x1)) in zip(logits, group, strict=True):
                yield (slice(y0, y1), slice(x0, x1),
                       out[:, y0 - top:y1 - top, x0 - left:x1 - left])


def sliding_window_logits(model: Model, image: torch.Tensor, num_classes: int, *, tile: int,
                          overlap: int, batch_size: int = 1) -> torch.Tensor:
    """Float logits (1, K, H, W) for an image (1, C, H, W), tile by tile: the image is what
    `model` takes (normalised, or raw pixels for a model that normalises)."""
    height, width = image.shape[-2:]
    logits = torch.empty(1, num_classes, height, width)
    for rows, cols, part in _owned_logits(model, image, tile, overlap, batch_size):
        logits[0, :, rows, cols] = part.float()
    return logits


def sliding_window_mask(model: Model, image: torch.Tensor, *, tile: int, overlap: int,
                        batch_size: int = 1) -> torch.Tensor:
    """Class indices (H, W) as uint8 for an image (1, C, H, W), tile by tile: the argmax of
    `sliding_window_logits`, without ever holding more than one tile's logits."""
    return sliding_window_maps(model, image, tile=tile, overlap=overlap, batch_size=batch_size)[0]


def sliding_window_maps(model: Model, image: torch.Tensor, *, tile: int, overlap: int,
                        batch_size: int = 1, confidence: bool = False,
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`sliding_window_mask`, and with `confidence` also `top_probability` (H, W) uint8, tile by
    tile."""
    height, width = image.shape[-2:]
    mask = torch.empty(height, width, dtype=torch.uint8)
    top = torch.empty(height, width, dtype=torch.uint8) if confidence else None
    for rows, cols, part in _owned_logits(model, image, tile, overlap, batch_size):
        mask[rows, cols] = class_mask(part)
        if top is not None:
            top[rows, cols] = top_probability(part[None])[0]
    return mask, top


def class_mask(scores: torch.Tensor) -> torch.Tensor:
    """(K, h, w) class scores → (h, w) uint8 class indices, the first best class where tied (as
    `argmax`), in any float dtype. `max(0).indices` is the faster kernel on the network's
    channels-last logits (`python -m bench.stages` times this one; README, issue 13 part 3)."""
    return scores.max(0).indices.to(torch.uint8)


def top_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, h, w) logits → (B, h, w) uint8: the winning class's softmax probability × 255,
    rounded (255 only where that probability rounds to 1 at 8 bits)."""
    return logits.float().softmax(1).amax(1).mul_(255).round_().to(torch.uint8)
