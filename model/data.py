"""Datasets: procedural `SyntheticScenes` (the default, no download) and `FolderDataset`.

Both yield `(image, mask)` as `tv_tensors.Image` (uint8, (3, H, W)) and `tv_tensors.Mask`
(int64, (H, W)); 255 marks pixels the loss and metrics ignore.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from model.classes import IGNORE_INDEX, SYNTHETIC_CLASSES

Sample = tuple[tv_tensors.Image, tv_tensors.Mask]
Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], Sample]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CLASSES_FILE = "classes.txt"

# SyntheticScenes' object radii in pixels, (min_radius, max_radius). The single source for
# its defaults and for the `object_scale` that training records in a checkpoint.
DEFAULT_OBJECT_SCALE: tuple[float, float] = (7.0, 30.0)


# --- SyntheticScenes --------------------------------------------------------------------------


def _shape_mask(
    kind: int, u: np.ndarray, v: np.ndarray, r: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask of one shape in its own rotated frame (u, v measured from its centre)."""
    d = np.hypot(u, v)
    if kind == 1:  # disc
        return d <= r
    if kind == 2:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= r * 0.85
    if kind == 3:  # triangle (equilateral, circumradius r)
        m = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = 2 * math.pi * k / 3
            m &= u * math.cos(a) + v * math.sin(a) <= r * 0.5
        return m
    if kind == 4:  # ring
        return (d <= r) & (d >= r * rng.uniform(0.45, 0.65))
    if kind == 5:  # cross
        w = r * 0.33
        a, b = np.abs(u), np.abs(v)
        return ((a <= w) & (b <= r)) | ((b <= w) & (a <= r))
    if kind == 6:  # five-pointed star
        theta = np.arctan2(v, u)
        return d <= r * (0.62 + 0.38 * np.cos(5 * theta))
    raise ValueError(f"unknown shape kind {kind}")


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float texture in [0, 1]: solid, stripes, checker or speckle in two colours."""
    c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    style = rng.integers(4)
    t: np.ndarray  # float32 zeros or a boolean pattern; made float32 below
    if style == 0:
        t = np.zeros((h, w), np.float32)
    elif style == 1:
        a, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
        t = (np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period) > 0)
    elif style == 2:
        cell = rng.integers(3, 8)
        t = ((xx // cell + yy // cell) % 2).astype(bool)
    else:
        t = rng.uniform(0, 1, (h, w)) < 0.3
    t = np.asarray(t, np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


class SyntheticScenes(Dataset):
    """Procedural scenes: a textured background with 2–9 possibly overlapping objects.

    Each foreground class is a shape (disc, square, triangle, ring, cross, star) drawn at a
    random size, rotation, colour and texture; later objects occlude earlier ones, then the image
    is blurred and noised. Object radii are in pixels (`min_radius`..`max_radius`), independent of
    the canvas size, so a model trained on small crops segments large canvases at native scale.
    Deterministic for (seed, index).
    """

    classes = SYNTHETIC_CLASSES

    def __init__(
        self,
        length: int,
        size: int | tuple[int, int] = 128,
        seed: int = 0,
        min_radius: float = DEFAULT_OBJECT_SCALE[0],
        max_radius: float = DEFAULT_OBJECT_SCALE[1],
        transform: Transform | None = None,
    ) -> None:
        self.length = length
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.seed = seed
        self.min_radius, self.max_radius = min_radius, max_radius
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (uint8 image (H, W, 3), uint8 mask (H, W)) for one index."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} scenes")
        rng = np.random.default_rng([self.seed, index])
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

        # Background: a colour gradient plus low-frequency blotches.
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        a = rng.uniform(0, 2 * math.pi)
        g = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w)
        g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
        image = c0 * (1 - g[..., None]) + c1 * g[..., None]
        low = rng.uniform(-0.15, 0.15, (max(h // 16, 2), max(w // 16, 2)))
        low = np.asarray(
            Image.fromarray(low.astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR),
            np.float32,
        )
        image = image + low[..., None]
        mask = np.zeros((h, w), np.uint8)

        area_scale = h * w / (128 * 128)
        n_objects = int(rng.integers(2, 10) * max(area_scale, 1.0) ** 0.5 + 0.5)
        for _ in range(n_objects):
            kind = int(rng.integers(1, len(self.classes)))
            r = float(rng.uniform(self.min_radius, self.max_radius))
            cy, cx = rng.uniform(-0.1 * h, 1.1 * h), rng.uniform(-0.1 * w, 1.1 * w)
            y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h)
            x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w)
            if y0 >= y1 or x0 >= x1:
                continue
            rot = rng.uniform(0, 2 * math.pi)
            dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
            u = dx * math.cos(rot) + dy * math.sin(rot)
            v = -dx * math.sin(rot) + dy * math.cos(rot)
            inside = _shape_mask(kind, u, v, r, rng)
            tex = _texture(y1 - y0, x1 - x0, rng)
            image[y0:y1, x0:x1][inside] = tex[inside]
            mask[y0:y1, x0:x1][inside] = kind

        pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
        blur = rng.uniform(0, 1.2)
        if blur > 0.3:
            pil = pil.filter(ImageFilter.GaussianBlur(blur))
        noisy = np.asarray(pil, np.float32) + rng.normal(0, rng.uniform(0, 12), (h, w, 3))
        return np.clip(noisy, 0, 255).astype(np.uint8), mask

    def __getitem__(self, index: int) -> Sample:
        image, mask = self.render(index)
        sample = (
            tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
            tv_tensors.Mask(torch.from_numpy(mask).long()),
        )
        return self.transform(*sample) if self.transform else sample


# --- FolderDataset ----------------------------------------------------------------------------


class DatasetError(ValueError):
    """A dataset folder that cannot be used as it is; the message says what to fix."""


def read_class_names(root: Path) -> list[str]:
    path = root / CLASSES_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing; write one class name per line, background first")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) < 2:
        raise DatasetError(f"{path}: lists {len(names)} class(es); at least 2 are needed")
    if len(names) > IGNORE_INDEX:
        raise DatasetError(f"{path}: lists {len(names)} classes; at most {IGNORE_INDEX} fit")
    return names


class FolderDataset(Dataset):
    """`root/images/*.{png,jpg,…}` paired by stem with `root/masks/*.png` (class indices).

    Masks are single-band PNGs (mode L or P) whose pixel values are class indices into
    `root/classes.txt`; 255 marks pixels to ignore. Problems raise `DatasetError` naming the file.
    """

    def __init__(self, root: str | Path, transform: Transform | None = None) -> None:
        self.root = Path(root)
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise DatasetError(f"{d}: missing; a dataset folder holds images/ and masks/")
        self.classes = read_class_names(self.root)
        images = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
        if no_mask := sorted(images.keys() - masks.keys()):
            raise DatasetError(
                f"{masks_dir}: no mask for image(s) {', '.join(no_mask[:5])}"
                f"{' …' if len(no_mask) > 5 else ''}; add masks/<stem>.png for each"
            )
        if no_image := sorted(masks.keys() - images.keys()):
            raise DatasetError(
                f"{images_dir}: no image for mask(s) {', '.join(no_image[:5])}"
                f"{' …' if len(no_image) > 5 else ''}"
            )
        if not images:
            raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.pairs = [(images[s], masks[s]) for s in sorted(images)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[index]
        with Image.open(image_path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(mask_path) as m:
            if m.mode not in ("L", "P"):
                raise DatasetError(
                    f"{mask_path}: mode {m.mode}; masks must be single-band class indices (L or P)"
                )
            mask = np.asarray(m)
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"{mask_path}: size {mask.shape[1]}×{mask.shape[0]} differs from image "
                f"{image_path.name} {image.shape[1]}×{image.shape[0]}"
            )
        values = np.unique(mask)
        bad = values[(values >= len(self.classes)) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DatasetError(
                f"{mask_path}: class value(s) {bad.tolist()} not in {CLASSES_FILE} "
                f"(0..{len(self.classes) - 1}, or {IGNORE_INDEX} to ignore)"
            )
        return image, mask

    def __getitem__(self, index: int) -> Sample:
        image, mask = self.load(index)
        sample = (
            tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1)),
            tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64))),
        )
        return self.transform(*sample) if self.transform else sample


# --- Loading ----------------------------------------------------------------------------------


def pad_collate(
    batch: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples, padding images with 0 and masks with the ignore index to the largest size."""
    h = max(img.shape[-2] for img, _ in batch)
    w = max(img.shape[-1] for img, _ in batch)
    images = batch[0][0].new_zeros((len(batch), batch[0][0].shape[0], h, w))
    masks = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.long)
    for i, (img, m) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        masks[i, : m.shape[-2], : m.shape[-1]] = m
    return images, masks


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # torch gives each worker base_seed + worker_id
    np.random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """A DataLoader whose order and worker seeds depend only on `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=pad_collate,
        worker_init_fn=_seed_worker,
        generator=generator,
        drop_last=shuffle,
        persistent_workers=False,
    )
