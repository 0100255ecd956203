"""The objects in a label mask: each class's connected components, with outlines as GeoJSON
polygons with holes.

Conventions (also in the README):
- Components are 8-connected (a diagonal touch joins two pixels), so holes are 4-connected.
  Class 0 is the background and has no objects.
- Coordinates are pixels: (0, 0) is the image's top-left corner, x runs right and y down, and
  pixel (col, row) covers the square [col, col + 1] × [row, row + 1]. `bbox` is [x, y, w, h] of
  those squares; `centroid` is the mean of the pixels' centres.
- Unsimplified, a ring runs through points 0.25 px inside the component's pixel edges, so
  rasterising the polygon by pixel centres (PIL, OpenCV `fillPoly`, rasterio) gives back exactly
  the component. Douglas–Peucker simplification (`tolerance`, px) then moves it at most that much
  further: the default 0.5 keeps every ring within 1 px of the mask's edges. Every polygon is
  valid (shapely's `is_valid`): where simplifying ring by ring made one cross itself, it is
  simplified again preserving topology.
- Rings are closed and oriented as RFC 7946 asks, by the signed area of the coordinates as
  written: exterior counter-clockwise, holes clockwise (on screen, with y down, the reverse).

The outline is traced with OpenCV on the component upsampled 2× (each pixel a 2 × 2 block),
which is what puts the ring 0.25 px inside the edges; a diagonal-only touch is bridged there by
one sub-pixel, so that no ring passes through the same corner twice.

Speed: one labelling pass over the foreground finds the components; only those that touch
another (non-background) class are split by class again, inside their bounding box.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import cv2
import numpy as np

from app.outlines import polygons

DEFAULT_TOLERANCE = 0.5
_SQUARE = np.ones((3, 3), np.uint8)


def find_objects(mask: np.ndarray, classes: list[str], confidence: np.ndarray | None = None,
                 min_area: int = 1, tolerance: float = DEFAULT_TOLERANCE) -> list[dict[str, Any]]:
    """Every class's components of at least `min_area` pixels, in reading order of their
    bounding boxes: class, index, area, bbox, centroid, score (the mean `confidence` / 255 over
    its pixels, or None without one) and polygon (a GeoJSON Polygon geometry)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
    found = sorted(_components(mask, min_area), key=lambda c: (c.bbox[1], c.bbox[0], c.class_index))
    objects: list[dict[str, Any]] = []
    for c in found:
        x, y, w, h = c.bbox
        score = None
        if confidence is not None:
            score = round(cv2.mean(confidence[y:y + h, x:x + w], mask=c.pixels)[0] / 255, 4)
        objects.append({"class": classes[c.class_index], "index": c.class_index, "area": c.area,
                        "bbox": list(c.bbox),
                        "centroid": [round(c.centroid[0] + 0.5, 3), round(c.centroid[1] + 0.5, 3)],
                        "score": score})
    if found:
        shapes = polygons([(c.pixels, c.bbox[0], c.bbox[1]) for c in found], tolerance)
        for obj, coordinates in zip(objects, shapes, strict=True):
            obj["polygon"] = {"type": "Polygon", "coordinates": coordinates}
    return objects


def feature_collection(objects: list[dict[str, Any]], **members: Any) -> dict[str, Any]:
    """The objects as a GeoJSON FeatureCollection (their polygons as geometries, the rest as
    properties); `members` are added at the top level (RFC 7946 foreign members)."""
    features = [{"type": "Feature", "geometry": obj["polygon"],
                 "properties": {k: v for k, v in obj.items() if k != "polygon"}}
                for obj in objects]
    return {"type": "FeatureCollection", "features": features, **members}


class _Component(NamedTuple):
    class_index: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    area: int
    centroid: tuple[float, float]  # mean column and row index of its pixels
    pixels: np.ndarray  # uint8 0/1 over its bbox


def _components(mask: np.ndarray, min_area: int) -> Iterator[_Component]:
    """Each 8-connected one-class component of at least `min_area` pixels."""
    foreground = (mask != 0).view(np.uint8)
    count, labels, stats, centres = cv2.connectedComponentsWithStatsWithAlgorithm(
        foreground, 8, cv2.CV_32S, cv2.CCL_BBDT)
    # A foreground pixel with a neighbour of another non-background class: its component holds
    # several classes and is split again below.
    shifted = mask - np.uint8(1)  # the background wraps round to 255: never the lowest
    mixed = foreground.view(bool) & ((cv2.dilate(mask, _SQUARE) != mask) |
                                     (cv2.erode(shifted, _SQUARE) != shifted))
    split = np.zeros(count, bool)
    split[np.unique(labels[mixed])] = True
    for label in np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= min_area).tolist():
        if label == 0:
            continue
        x, y, w, h, area = (int(v) for v in stats[label])
        pixels = (labels[y:y + h, x:x + w] == label).view(np.uint8)
        if not split[label]:
            row, col = divmod(int(np.argmax(pixels)), w)  # its first pixel: its class
            yield _Component(int(mask[y + row, x + col]), (x, y, w, h), area,
                             (float(centres[label][0]), float(centres[label][1])), pixels)
            continue
        classes = mask[y:y + h, x:x + w]
        for index in np.unique(classes[pixels.view(bool)]).tolist():
            part = pixels & (classes == index)
            n, sub, sub_stats, sub_centres = cv2.connectedComponentsWithStats(part, connectivity=8)
            for k in range(1, n):
                sx, sy, sw, sh, sub_area = (int(v) for v in sub_stats[k])
                if sub_area >= min_area:
                    yield _Component(index, (x + sx, y + sy, sw, sh), sub_area,
                                     (float(sub_centres[k][0]) + x, float(sub_centres[k][1]) + y),
                                     (sub[sy:sy + sh, sx:sx + sw] == k).view(np.uint8))
