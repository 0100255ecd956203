"""Class-index mask → response bodies: PNG, COCO RLE, overlay, areas."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def mask_png(mask: np.ndarray, palette: list[list[int]]) -> bytes:
    """One-band PNG (mode P with the checkpoint's palette); pixel value = class index."""
    height, width = mask.shape
    im = Image.frombytes("P", (width, height), np.ascontiguousarray(mask, np.uint8).tobytes())
    flat = [c for rgb in palette for c in rgb]
    im.putpalette(flat + [0] * (768 - len(flat)))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def mask_png_base64(mask: np.ndarray, palette: list[list[int]]) -> str:
    return base64.b64encode(mask_png(mask, palette)).decode("ascii")


def areas(mask: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Fraction of the image covered by each class (all classes listed)."""
    counts = np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)]
    total = max(mask.size, 1)
    return {name: round(float(c) / total, 6) for name, c in zip(classes, counts, strict=True)}


def rle_encode(binary: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts: column-major runs, starting with a run of zeros."""
    flat = np.asfortranarray(binary).ravel(order="F").astype(np.uint8)
    if flat.size == 0:
        return []
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def rle_decode(counts: list[int], height: int, width: int) -> np.ndarray:
    values = np.zeros(sum(counts), np.uint8)
    pos, value = 0, 0
    for run in counts:
        values[pos : pos + run] = value
        pos += run
        value ^= 1
    return values.reshape((height, width), order="F")


def rle_by_class(mask: np.ndarray, classes: list[str]) -> list[dict]:
    height, width = mask.shape
    out = []
    for index in np.unique(mask).tolist():
        out.append({"class": classes[index], "index": index, "size": [height, width],
                    "counts": rle_encode(mask == index)})
    return out


def overlay_png(image: np.ndarray, mask: np.ndarray, palette: list[list[int]],
                alpha: float = 0.5) -> bytes:
    """The image blended with the coloured mask (background left as is), as PNG."""
    colours = np.asarray(palette, np.float32)[mask]  # (H, W, 3)
    weight = np.where(mask[..., None] > 0, alpha, 0.0).astype(np.float32)
    blended = image.astype(np.float32) * (1 - weight) + colours * weight
    buffer = io.BytesIO()
    Image.fromarray(blended.round().astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
