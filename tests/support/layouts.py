"""Tiny datasets written from `SyntheticScenes` in each layout training reads: our folder,
COCO (pycocotools RLE), Pascal VOC (palette PNGs) and Cityscapes (label ids + a label map)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from model.data import SyntheticScenes

SYNTHETIC = list(SyntheticScenes.classes)
ID_OFFSET = 7  # Cityscapes-style: class k is stored as label id k + 7; id 0 is ignored


def scenes(count: int = 4, size: int = 32, seed: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    data = SyntheticScenes(count, size=size, seed=seed)
    return [data.render(i) for i in range(count)]


def stem(i: int) -> str:
    return f"scene_{i:03d}"


def write_folder(root: Path, pairs, classes=SYNTHETIC) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for i, (image, mask) in enumerate(pairs):
        Image.fromarray(image).save(root / "images" / f"{stem(i)}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem(i)}.png")
    return root


def write_coco(root: Path, pairs, images_dir: str = "images") -> Path:
    """One compressed-RLE annotation per class present in each scene (exact, no overlaps);
    category ids 10, 20, … so that they must be mapped to 1, 2, …"""
    (root / images_dir).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (image, mask) in enumerate(pairs):
        name = f"{stem(i)}.png"
        Image.fromarray(image).save(root / images_dir / name)
        images.append({"id": i + 1, "file_name": name, "height": mask.shape[0],
                       "width": mask.shape[1]})
        for k in np.unique(mask).tolist():
            if k == 0:
                continue
            rle = coco_mask.encode(np.asfortranarray((mask == k).astype(np.uint8)))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": 10 * k, "iscrowd": 0,
                                "area": int((mask == k).sum()),
                                "segmentation": {"size": rle["size"],
                                                 "counts": rle["counts"].decode()}})
    categories = [{"id": 10 * k, "name": name} for k, name in enumerate(SYNTHETIC) if k]
    (root / "annotations.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))
    return root


def voc_palette() -> list[int]:
    """Pascal VOC's colour map (bit-interleaved), as a flat PIL palette."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def write_voc(root: Path, pairs, val: int = 1) -> Path:
    """The last `val` scenes are the val split, the rest train."""
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / d).mkdir(parents=True)
    for i, (image, mask) in enumerate(pairs):
        Image.fromarray(image).save(root / "JPEGImages" / f"{stem(i)}.jpg", quality=95)
        png = Image.fromarray(mask, mode="P")
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{stem(i)}.png")
    names = [stem(i) for i in range(len(pairs))]
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(names[:-val]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(names[-val:]) + "\n")
    return root


def write_cityscapes(root: Path, pairs, val: int = 1) -> tuple[Path, Path]:
    """leftImg8bit/ and gtFine/ with label ids (class + 7), and the label map beside them."""
    for i, (image, mask) in enumerate(pairs):
        split = "val" if i >= len(pairs) - val else "train"
        for d in ("leftImg8bit", "gtFine"):
            (root / d / split / "town").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "leftImg8bit" / split / "town" /
                                    f"town_{stem(i)}_leftImg8bit.png")
        Image.fromarray((mask + ID_OFFSET).astype(np.uint8)).save(
            root / "gtFine" / split / "town" / f"town_{stem(i)}_gtFine_labelIds.png")
    label_map = root / "label_map.json"
    label_map.write_text(json.dumps({
        "classes": SYNTHETIC,
        "ids": {"0": 255, **{str(k + ID_OFFSET): k for k in range(len(SYNTHETIC))}}}))
    return root, label_map

