"""The model behind the service: preprocessing, batched prediction and tiling for one checkpoint.

Stages: `prepare` (decode thread: uint8 RGB → normalised tensor, resized under the `resize`
policy) → `predict` (inference thread: a same-shape batch → class-index masks at the upload's
size) → the route encodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import Checkpoint
from model.tiling import Axis, sliding_window_logits, sliding_window_mask
from model.transforms import preprocess


@dataclass
class Prepared:
    tensor: torch.Tensor  # (3, h, w) normalised, at inference resolution
    height: int  # the upload's (EXIF-oriented) size: the mask comes back at this size
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.tensor.shape[-2:])


@dataclass
class InferenceOptions:
    resolution: str = "native"
    resize_to: int = 512
    tile_size: int = 512
    tile_overlap: int = 64
    tile_batch_size: int = 4


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DECONVSEG_DEVICE=cuda but no CUDA device is available")
    return torch.device(name)


class Segmenter:
    def __init__(self, ckpt: Checkpoint, options: InferenceOptions, device: torch.device,
                 observe_padding: Callable[[float], None] | None = None) -> None:
        self.ckpt = ckpt
        self.options = options
        self.device = device
        self.model = ckpt.model.to(device).eval().to(memory_format=torch.channels_last)
        self.num_classes = len(ckpt.classes)
        self.observe_padding = observe_padding or (lambda _: None)

    def prepare(self, image: np.ndarray) -> Prepared:
        """uint8 (H, W, 3) → Prepared, using the checkpoint's normalisation."""
        height, width = image.shape[:2]
        tensor = preprocess(image, self.ckpt.mean, self.ckpt.std)
        if self.options.resolution == "resize":
            scale = self.options.resize_to / max(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            if size != (height, width):
                tensor = F.interpolate(tensor[None], size=size, mode="bilinear",
                                       align_corners=False, antialias=scale < 1)[0]
        return Prepared(tensor, height, width)

    def needs_tiling(self, item: Prepared) -> bool:
        return max(item.shape) > self.options.tile_size

    @torch.inference_mode()
    def predict(self, items: Sequence[Prepared]) -> list[np.ndarray]:
        """Same-shape items → uint8 masks (height, width), one per item, each at upload size."""
        if len(items) == 1 and self.needs_tiling(items[0]):
            return [self._predict_tiled(items[0])]
        self.observe_padding(0.0)  # same-shape batches are never padded
        batch = torch.stack([it.tensor for it in items]).to(self.device)
        logits = self.model(batch.contiguous(memory_format=torch.channels_last))  # (B, K, h, w)
        masks = []
        for it, lg in zip(items, logits, strict=True):
            if lg.shape[-2:] != (it.height, it.width):
                lg = F.interpolate(lg[None].float(), size=(it.height, it.width),
                                   mode="bilinear", align_corners=False)[0]
            masks.append(lg.argmax(0).to(torch.uint8).cpu().numpy())
        return masks

    def _predict_tiled(self, item: Prepared) -> np.ndarray:
        o = self.options
        image = item.tensor[None].to(self.device)
        h, w = item.shape
        tiles = dict(tile=o.tile_size, overlap=o.tile_overlap, batch_size=o.tile_batch_size)
        padded = Axis.plan(h, o.tile_size, o.tile_overlap).padded * \
            Axis.plan(w, o.tile_size, o.tile_overlap).padded
        self.observe_padding(1.0 - h * w / padded)
        if (h, w) == (item.height, item.width):  # memory-bounded: never holds full logits
            return sliding_window_mask(self.model, image, self.num_classes, **tiles).numpy()
        logits = sliding_window_logits(self.model, image, self.num_classes, **tiles)
        logits = F.interpolate(logits, size=(item.height, item.width), mode="bilinear",
                               align_corners=False)
        return logits[0].argmax(0).to(torch.uint8).cpu().numpy()

    def bucket(self, item: Prepared) -> tuple:
        """Batch only exact-shape items: padding would change conv outputs near the border."""
        return ("tile", id(item)) if self.needs_tiling(item) else item.shape

    def warm_up(self, max_batch_size: int) -> None:
        """Run the shapes the service will see so the first request is not the slow one."""
        side = min(256, self.options.tile_size)
        probe = Prepared(torch.zeros(3, side, side), side, side)
        self.predict([probe])
        if max_batch_size > 1:
            self.predict([probe] * min(max_batch_size, 4))
