"""Joint image/mask transforms, the one inference preprocessing, and CutMix/MixUp for masks.

Pipelines run on `tv_tensors.Image` + `tv_tensors.Mask`: geometric ops move both (masks with
NEAREST, padding with the ignore index), photometric ops touch the image only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from model.classes import IGNORE_INDEX

DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


def train_transforms(
    crop_size: int,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    scale_range: tuple[float, float] = (0.8, 1.25),
    color_jitter: float = 0.2,
    flips: bool = True,
) -> v2.Compose:
    """Scale jitter, random crop (padded with 0 / ignore), flips, colour jitter, normalisation.

    `scale_range=(1, 1)`, `flips=False` or `color_jitter=0` leave that step out; with all three
    off, a crop the image's size is `eval_transforms`.
    """
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}
    steps: list[v2.Transform] = [v2.ToImage()]
    if scale_range != (1.0, 1.0):
        # Masks always resample with NEAREST in v2; the interpolation given here is the image's.
        steps.append(v2.RandomAffine(degrees=0, scale=scale_range, fill=fill,
                                     interpolation=v2.InterpolationMode.BILINEAR))
    steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if flips:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                    saturation=color_jitter, hue=color_jitter / 4))
    steps += [
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]
    return v2.Compose(steps)


def eval_transforms(
    mean: Sequence[float] = DEFAULT_MEAN, std: Sequence[float] = DEFAULT_STD
) -> v2.Compose:
    """The inference preprocessing, the one the service, the tiled path, the evaluator and
    training's validation all run: uint8 → float in [0, 1] → normalised. A joint transform
    (a mask passes through untouched); on an image alone, `preprocess`.

    One float copy: `ToImage` wraps a (3, H, W) tensor without copying, `ToDtype` makes the
    float image, `Normalize` works in place on it.
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std), inplace=True),
        ]
    )


class Preprocess(torch.nn.Module):
    """The same preprocessing as a module a frozen graph can hold: uint8 pixels (…, 3, H, W) →
    normalised float32, through the torchvision kernels `eval_transforms`'s `ToDtype` and
    `Normalize` dispatch to (bit-identical to it, tested). The service puts it in front of the
    network, so the forward is fed the uploads' uint8 pixels; a float32 input is taken as
    pixels already in [0, 1] and normalised without being changed in place."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    # Not mutated: TorchScript compiles it, and cannot compile mutmut's trampoline.
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no mutate block
        image = TF.to_dtype_image(pixels, torch.float32, scale=True)
        return TF.normalize_image(image, self.mean, self.std,
                                  inplace=pixels.dtype != torch.float32)


def preprocess(
    image: np.ndarray | torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 RGB (H, W, 3) array or (3, H, W) tensor → normalised float32 (3, H, W), through
    `eval_transforms`. The result keeps the array's channels-last memory layout, the one the
    model runs in. In the service's I/O threads torch computes single-threaded."""
    if isinstance(image, np.ndarray):  # a (3, H, W) view: ToImage would copy to make it CHW
        image = pixels_view(image)
    return eval_transforms(mean, std)(image).as_subclass(torch.Tensor)


def pixels_view(image: np.ndarray) -> torch.Tensor:
    """uint8 RGB (H, W, 3) array → a (3, H, W) tensor view of it, channels-last in memory (the
    layout the model runs in); copied only if the array is not C-contiguous. A decoded upload
    is read-only, which is fine: the view is only ever read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)


# --- CutMix / MixUp for segmentation ----------------------------------------------------------


def one_hot_targets(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) class indices → (B, C, H, W) float one-hot; ignored pixels become all zeros."""
    valid = masks != IGNORE_INDEX
    hot = F.one_hot(torch.where(valid, masks, 0), num_classes).permute(0, 3, 1, 2).float()
    return hot * valid.unsqueeze(1)


class _BatchMix:
    """Shared parameterisation with torchvision's v2.CutMix/v2.MixUp: λ ~ Beta(α, α), the batch
    mixed with itself rolled by one."""

    def __init__(self, num_classes: int, alpha: float = 1.0, p: float = 1.0) -> None:
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.num_classes = num_classes
        self.alpha = alpha
        self.p = p
        self._beta = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))

    def _check(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        if images.dim() != 4 or masks.dim() != 3 or images.shape[0] != masks.shape[0]:
            raise ValueError(
                f"expected images (B, C, H, W) and masks (B, H, W), got {tuple(images.shape)} "
                f"and {tuple(masks.shape)}"
            )
        if images.shape[-2:] != masks.shape[-2:]:
            raise ValueError("images and masks must have the same H, W")

    def _sample_lambda(self) -> float:
        return float(self._beta.sample())


class SegCutMix(_BatchMix):
    """Paste one random box from the rolled batch into every image and the same box into its mask.

    Targets stay hard class indices: inside the box the pasted pixels' labels are exact.
    Returns (images, masks, lam) with lam the unpasted area fraction.
    """

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        self._check(images, masks)
        if torch.rand(1).item() >= self.p:
            return images, masks, 1.0
        lam = self._sample_lambda()
        h, w = images.shape[-2:]
        r_x, r_y = torch.randint(w, (1,)).item(), torch.randint(h, (1,)).item()
        r = 0.5 * (1.0 - lam) ** 0.5
        r_w_half, r_h_half = int(r * w), int(r * h)
        x1, y1 = max(r_x - r_w_half, 0), max(r_y - r_h_half, 0)
        x2, y2 = min(r_x + r_w_half, w), min(r_y + r_h_half, h)
        images, masks = images.clone(), masks.clone()
        images[..., y1:y2, x1:x2] = images.roll(1, 0)[..., y1:y2, x1:x2]
        masks[..., y1:y2, x1:x2] = masks.roll(1, 0)[..., y1:y2, x1:x2]
        lam = 1.0 - (x2 - x1) * (y2 - y1) / (w * h)
        return images, masks, lam


class SegMixUp(_BatchMix):
    """Blend each image with the rolled batch and the one-hot masks with the same λ.

    Returns (images, soft_targets (B, C, H, W), lam). A pixel ignored in either source is ignored
    (all-zero target), which `segmentation_loss` skips.
    """

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        self._check(images, masks)
        targets = one_hot_targets(masks, self.num_classes)
        if torch.rand(1).item() >= self.p:
            return images, targets, 1.0
        lam = self._sample_lambda()
        rolled = targets.roll(1, 0)
        valid = (targets.sum(1, keepdim=True) > 0) & (rolled.sum(1, keepdim=True) > 0)
        mixed_images = images * lam + images.roll(1, 0) * (1.0 - lam)
        mixed_targets = (targets * lam + rolled * (1.0 - lam)) * valid
        return mixed_images, mixed_targets, lam


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor,
                      dice_weight: float = 0.0) -> torch.Tensor:
    """Cross-entropy for hard (B, H, W) targets with ignore index, or soft (B, C, H, W) targets,
    plus `dice_weight` × `dice_loss`.

    Soft targets: per-pixel −Σ t·log p, averaged over pixels whose target sums to > 0.
    """
    log_probs = F.log_softmax(logits, dim=1)
    if target.dtype == torch.long:
        loss = F.nll_loss(log_probs, target, ignore_index=IGNORE_INDEX)
    else:
        if target.shape != logits.shape:
            raise ValueError(
                f"soft targets {tuple(target.shape)} must match logits {tuple(logits.shape)}"
            )
        per_pixel = -(target * log_probs).sum(1)  # (B, H, W)
        valid = target.sum(1) > 0
        loss = per_pixel[valid].sum() / valid.sum().clamp(min=1)
    if dice_weight:
        loss = loss + dice_weight * _dice(log_probs.exp(), target)
    return loss


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 − the soft Dice score, averaged over classes, each class's counted over the batch.

    Cross-entropy weighs every pixel alike, so a class's few boundary pixels cost it little;
    Dice, 2·|P∩T| / (|P| + |T|) with the softmax as P, is an overlap ratio per class like the
    IoU it is evaluated by (V-Net; nnU-Net trains with both). Ignored pixels (hard targets 255,
    soft targets summing to 0) are left out of both sums; `smooth` keeps a class absent from
    the batch and predicted nowhere at a score of 1.
    """
    return _dice(logits.softmax(1), target, smooth)


def _dice(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    num_classes = probs.shape[1]
    if target.dtype == torch.long:  # sums by class index: no (B, C, H, W) one-hot is built
        valid = target != IGNORE_INDEX
        index = torch.where(valid, target, 0)
        picked = probs.gather(1, index[:, None])[:, 0] * valid  # (B, H, W): p of the true class
        overlap = probs.new_zeros(num_classes).index_add(0, index.flatten(), picked.flatten())
        target_sizes = torch.bincount(index.flatten(), weights=valid.flatten().to(probs.dtype),
                                      minlength=num_classes)
        prob_sizes = (probs * valid[:, None]).sum((0, 2, 3))
    else:
        valid = target.sum(1, keepdim=True) > 0
        overlap = (probs * target).sum((0, 2, 3))
        target_sizes = target.sum((0, 2, 3))
        prob_sizes = (probs * valid).sum((0, 2, 3))
    return 1 - ((2 * overlap + smooth) / (prob_sizes + target_sizes + smooth)).mean()
