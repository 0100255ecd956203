"""The dataset layouts `--data` reads, besides our own folder (`model.data.FolderDataset`):

- **COCO** instances: a folder with `annotations.json` and `images/`, or a `.json` path with the
  images beside it or under `images/`. Polygons and RLE (pycocotools) become class masks:
  category ids, sorted, map to classes 1..K (0 is the background). Overlaps: annotations are
  painted largest first, so where two overlap the smaller one (usually the one in front) wins;
  `iscrowd` regions become 255 (ignored) except where a single instance covers them.
- **Pascal VOC**: `JPEGImages/`, `SegmentationClass/` palette PNGs (index = class, 255 = the
  border, ignored) and `ImageSets/Segmentation/{train,val}.txt`; the 21 VOC class names.
- **Cityscapes-style label-id PNGs** with `--label-map` (a JSON of class names and id → train id
  or 255): `leftImg8bit/<split>/<city>/*_leftImg8bit.png` with
  `gtFine/<split>/<city>/*_gtFine_labelIds.png`, or our folder layout holding label ids.

`open_dataset` detects the layout (or takes `--data-format`). Every problem raises
`DatasetError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from torch.utils.data import Dataset
from torchvision import tv_tensors

from model.classes import IGNORE_INDEX
from model.data import (
    CLASSES_FILE,
    IMAGE_SUFFIXES,
    DatasetError,
    FolderDataset,
    Sample,
    Transform,
)

FORMATS = ("auto", "folder", "coco", "voc", "cityscapes")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")

MaskLoader = Callable[[], np.ndarray]


class LabelledImages(Dataset):
    """(image path, mask loader) pairs and the class names: the one shape every layout reads
    into. Masks are checked as they load: same size as the image, values classes or 255."""

    def __init__(self, classes: list[str], items: list[tuple[Path, MaskLoader, str]],
                 transform: Transform | None = None) -> None:
        if not items:
            raise DatasetError("the dataset holds no images")
        self.classes = classes
        self.items = items  # (image, mask loader, what to name when the mask is wrong)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, load_mask, source = self.items[index]
        try:
            with Image.open(image_path) as im:
                image = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise DatasetError(f"{image_path}: not a readable image ({exc})") from None
        mask = load_mask()
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{source}: mask size {mask.shape[1]}×{mask.shape[0]} differs "
                               f"from image {image_path.name} {image.shape[1]}×{image.shape[0]}")
        values = np.unique(mask)
        bad = values[(values >= len(self.classes)) & (values != IGNORE_INDEX)]
        if bad.size:
            raise DatasetError(f"{source}: value(s) {bad.tolist()} outside the "
                               f"{len(self.classes)} classes (0..{len(self.classes) - 1}, or "
                               f"{IGNORE_INDEX} to ignore)")
        return image, mask

    def __getitem__(self, index: int) -> Sample:
        image, mask = self.load(index)
        sample = (tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1)),
                  tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64))))
        return self.transform(*sample) if self.transform else sample


def open_dataset(path: str | Path, data_format: str = "auto", split: str = "train",
                 label_map: str | Path | None = None,
                 transform: Transform | None = None) -> FolderDataset | LabelledImages:
    """The dataset at `path` in its layout (detected when `data_format` is "auto"); `split` picks
    VOC's and Cityscapes' train or val list."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    kind = detect(path) if data_format == "auto" else data_format
    if kind == "coco":
        return coco(path, transform)
    if kind == "voc":
        return voc(path, split, transform)
    if kind == "cityscapes" or (kind == "folder" and label_map is not None):
        if label_map is None:
            raise DatasetError(f"{path}: label-id masks need --label-map (a JSON of class names "
                               "and id → train id)")
        return label_ids(path, kind, split, label_map, transform)
    if kind == "folder":
        return FolderDataset(path, transform=transform)
    raise DatasetError(f"unknown data format {kind!r}; one of {', '.join(FORMATS)}")


def detect(path: Path) -> str:
    if path.is_file() and path.suffix == ".json" or (path / "annotations.json").is_file():
        return "coco"
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir():
        return "cityscapes"
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return "folder"
    raise DatasetError(
        f"{path}: not a dataset layout this reads: COCO (annotations.json + images/, or a .json "
        "file), VOC (JPEGImages/ + SegmentationClass/), Cityscapes (leftImg8bit/ + gtFine/, with "
        f"--label-map) or a folder (images/ + masks/ + {CLASSES_FILE})")


# --- COCO -------------------------------------------------------------------------------------


def coco(path: Path, transform: Transform | None = None) -> LabelledImages:
    json_path = path if path.is_file() else path / "annotations.json"
    try:
        doc = json.loads(json_path.read_text())
        images, annotations = doc["images"], doc.get("annotations", [])
        categories = sorted(doc["categories"], key=lambda c: c["id"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{json_path}: unreadable ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{json_path}: not COCO instances JSON (missing {exc})") from None
    index_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    classes = ["background", *(str(c["name"]) for c in categories)]
    by_image: dict[int, list[dict[str, Any]]] = {image["id"]: [] for image in images}
    for ann in annotations:
        if ann.get("category_id") not in index_of:
            raise DatasetError(f"{json_path}: annotation {ann.get('id')} has category_id "
                               f"{ann.get('category_id')}, not in the JSON's categories")
        if ann.get("image_id") not in by_image:
            raise DatasetError(f"{json_path}: annotation {ann.get('id')} names image_id "
                               f"{ann.get('image_id')}, not in the JSON's images")
        by_image[ann["image_id"]].append(ann)
    folder = json_path.parent
    items = []
    for image in sorted(images, key=lambda im: im["file_name"]):
        candidates = [folder / "images" / image["file_name"], folder / image["file_name"]]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise DatasetError(f"{json_path}: image {image['file_name']} (id {image['id']}) is "
                               f"in neither {folder / 'images'} nor {folder}")
        items.append((found, _coco_painter(image, by_image[image["id"]], index_of, json_path),
                      f"{json_path} (image {image['file_name']})"))
    return LabelledImages(classes, items, transform)


def _coco_painter(image: dict[str, Any], annotations: list[dict[str, Any]],
                  index_of: dict[int, int], json_path: Path) -> MaskLoader:
    def paint() -> np.ndarray:
        height, width = int(image["height"]), int(image["width"])
        mask = np.zeros((height, width), np.uint8)
        crowd = np.zeros((height, width), bool)
        instances = np.zeros_like(crowd)
        # Largest first: where instances overlap, the smaller one (usually in front) wins.
        for ann in sorted(annotations, key=lambda a: -float(a.get("area", 0))):
            region = _decode(ann, height, width, json_path)
            if ann.get("iscrowd"):
                crowd |= region
            else:
                mask[region] = index_of[ann["category_id"]]
                instances |= region
        mask[crowd & ~instances] = IGNORE_INDEX
        return mask

    return paint


def _decode(ann: dict[str, Any], height: int, width: int, json_path: Path) -> np.ndarray:
    segmentation = ann.get("segmentation")
    try:
        if isinstance(segmentation, list):  # polygons
            rles = coco_mask.frPyObjects(segmentation, height, width)
            rle = coco_mask.merge(rles) if rles else None
        elif isinstance(segmentation, dict):  # RLE, counts uncompressed (list) or compressed
            counts = segmentation["counts"]
            rle = (coco_mask.frPyObjects(segmentation, height, width) if isinstance(counts, list)
                   else {"size": segmentation["size"], "counts": counts.encode()
                         if isinstance(counts, str) else counts})
        else:
            raise TypeError("neither polygons nor RLE")
        if rle is None:
            return np.zeros((height, width), bool)
        with warnings.catch_warnings():  # pycocotools' __array__ predates NumPy 2's copy=
            warnings.simplefilter("ignore", DeprecationWarning)
            return coco_mask.decode(rle).astype(bool)
    except (TypeError, KeyError, ValueError, IndexError) as exc:
        raise DatasetError(f"{json_path}: annotation {ann.get('id')} has an unreadable "
                           f"segmentation ({exc})") from None


# --- Pascal VOC -------------------------------------------------------------------------------


def voc(path: Path, split: str, transform: Transform | None = None) -> LabelledImages:
    split_file = path / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        raise DatasetError(f"{split_file}: missing; VOC lists each split's image ids there")
    items = []
    for stem in [line.strip() for line in split_file.read_text().splitlines() if line.strip()]:
        image = path / "JPEGImages" / f"{stem}.jpg"
        mask = path / "SegmentationClass" / f"{stem}.png"
        for needed in (image, mask):
            if not needed.is_file():
                raise DatasetError(f"{split_file}: names {stem}, but {needed} is missing")
        items.append((image, _png_loader(mask), str(mask)))
    return LabelledImages(list(VOC_CLASSES), items, transform)


def _png_loader(path: Path, remap: np.ndarray | None = None) -> MaskLoader:
    """A single-band PNG's values (a palette PNG's indices), through `remap` when given."""
    def load() -> np.ndarray:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(f"{path}: mode {im.mode}; a mask is one band of class "
                                   "indices (L or P) or label ids")
            values = np.asarray(im)
        if remap is None:
            return values.astype(np.uint8)
        if values.max(initial=0) >= len(remap) or (remap[values] < 0).any():
            unknown = sorted(set(np.unique(values).tolist()) - set(np.flatnonzero(remap >= 0)))
            raise DatasetError(f"{path}: label id(s) {unknown} not in the --label-map")
        return remap[values].astype(np.uint8)

    return load


# --- Label ids with a map (Cityscapes) --------------------------------------------------------


def read_label_map(path: str | Path) -> tuple[list[str], np.ndarray]:
    """`{"classes": [names by train id], "ids": {"<label id>": train id or 255}}` → the class
    names and a lookup table (label id → train id; -1 where the map says nothing)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        classes = [str(c) for c in doc["classes"]]
        ids = {int(k): int(v) for k, v in doc["ids"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: a label map is {{\"classes\": [names], \"ids\": "
                           f"{{\"<label id>\": <train id or 255>}}}} ({exc})") from None
    bad = {k: v for k, v in ids.items() if not (0 <= v < len(classes) or v == IGNORE_INDEX)
           or k < 0}
    if bad:
        raise DatasetError(f"{path}: ids {bad} map outside the {len(classes)} classes "
                           f"(or {IGNORE_INDEX} to ignore)")
    table = np.full(max(ids, default=0) + 1, -1, np.int64)
    for label_id, train_id in ids.items():
        table[label_id] = train_id
    return classes, table


def label_ids(path: Path, kind: str, split: str, label_map: str | Path,
              transform: Transform | None = None) -> LabelledImages:
    classes, table = read_label_map(label_map)
    pairs: list[tuple[Path, Path]]
    if kind == "cityscapes":
        image_root = path / "leftImg8bit" / split
        if not image_root.is_dir():
            raise DatasetError(f"{image_root}: missing; Cityscapes keeps each split's images "
                               "under leftImg8bit/<split>/<city>/")
        pairs = []
        for image in sorted(image_root.glob("*/*_leftImg8bit.png")):
            stem = image.name.removesuffix("_leftImg8bit.png")
            mask = path / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: missing, for image {image}")
            pairs.append((image, mask))
    else:  # our folder layout, its masks holding label ids
        images = {p.stem: p for p in (path / "images").iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES}
        pairs = []
        for stem, image in sorted(images.items()):
            mask = path / "masks" / f"{stem}.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: missing, for image {image}")
            pairs.append((image, mask))
    return LabelledImages(classes, [(image, _png_loader(mask, table), str(mask))
                                    for image, mask in pairs], transform)
