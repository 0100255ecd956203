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
import shapely

Ring = list[list[float]]

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
    polygons: list[shapely.Polygon] = []
    for c in found:
        x, y, w, h = c.bbox
        score = None
        if confidence is not None:
            score = round(cv2.mean(confidence[y:y + h, x:x + w], mask=c.pixels)[0] / 255, 4)
        objects.append({"class": classes[c.class_index], "index": c.class_index, "area": c.area,
                        "bbox": list(c.bbox),
                        "centroid": [round(c.centroid[0] + 0.5, 3), round(c.centroid[1] + 0.5, 3)],
                        "score": score})
        polygons.append(_polygon(c.pixels, x, y, tolerance))
    shapes = np.asarray(polygons, dtype=object)
    if len(shapes):
        # OpenCV's Douglas–Peucker is fast but may make a ring cross itself or a hole; those
        # few are simplified again from the exact rings, preserving topology.
        for i in np.flatnonzero(~shapely.is_valid(shapes)).tolist():
            x, y, _, _ = found[i].bbox
            exact = _polygon(found[i].pixels, x, y, 0.0)
            shapes[i] = shapely.simplify(exact, tolerance, preserve_topology=True)
        shapes = shapely.orient_polygons(shapes, exterior_cw=False)
    for obj, shape in zip(objects, shapes.tolist(), strict=True):
        obj["polygon"] = {"type": "Polygon", "coordinates": _coordinates(shape)}
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


def _polygon(component: np.ndarray, x0: int, y0: int, tolerance: float) -> shapely.Polygon:
    """A component's exterior ring and holes, each simplified by `tolerance` px, in image
    coordinates (possibly invalid after simplification: the caller checks)."""
    fine = _upsampled(component)
    contours, hierarchy = cv2.findContours(fine, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    outer = [i for i, (_, _, _, parent) in enumerate(hierarchy[0]) if parent < 0]
    if len(outer) != 1:
        raise ValueError(f"expected one 8-connected component, found {len(outer)}")
    holes = [i for i, (_, _, _, parent) in enumerate(hierarchy[0]) if parent == outer[0]]

    def image_xy(contour: np.ndarray, hole: bool) -> np.ndarray:
        ring = _outline(contour[:, 0, :], fine, hole)
        if tolerance > 0:
            simplified = cv2.approxPolyDP(ring[:, None, :], 2 * tolerance, closed=True)[:, 0]
            if len(simplified) >= 3 and cv2.contourArea(simplified) > 0:
                ring = simplified
        # Corner k of the padded 2× grid is (k - 1) / 2 in the image.
        return (ring - 1) / 2 + (x0, y0)

    return shapely.Polygon(image_xy(contours[outer[0]], False),
                           [image_xy(contours[i], True) for i in holes])


def _outline(points: np.ndarray, fine: np.ndarray, hole: bool) -> np.ndarray:
    """A traced border (the centres of its boundary sub-pixels, one step apart) → the edges of
    its sub-pixel squares: the corners of a rectilinear ring, in 2×-grid corner coordinates.

    Each diagonal step goes round through the foreground sub-pixel beside it (there is one: no
    two foreground sub-pixels touch only at a corner). Then every corner sub-pixel's centre
    moves half a sub-pixel out along both of its sides' normals."""
    steps = _next(points) - points
    diagonal = (steps[:, 0] != 0) & (steps[:, 1] != 0)
    if diagonal.any():
        sideways = points + steps * (1, 0)
        corner = np.where((fine[sideways[:, 1], sideways[:, 0]] != 0)[:, None], sideways,
                          points + steps * (0, 1))
        keep = np.stack([np.ones(len(points), bool), diagonal], axis=1)
        points = np.stack([points, corner], axis=1)[keep]  # each point, then its corner if any
        steps = _next(points) - points
    out = steps
    into = np.concatenate((out[-1:], out[:-1]))
    turns = (out != into).any(axis=1)
    vertices, out, into = points[turns] + 0.5, out[turns], into[turns]
    # The outward normal (away from the foreground) of a step (dx, dy) is (dy, -dx) along a
    # ring of positive signed area, the opposite otherwise; along a hole, the other way again.
    sign = 0.5 if (cv2.contourArea(vertices.astype(np.float32), oriented=True) > 0) != hole \
        else -0.5
    normals = into + out  # both sides' directions; the normal is this turned a quarter
    return (vertices + sign * np.stack([normals[:, 1], -normals[:, 0]], axis=1)
            ).astype(np.float32)


def _next(points: np.ndarray) -> np.ndarray:
    return np.concatenate((points[1:], points[:1]))


def _upsampled(component: np.ndarray) -> np.ndarray:
    """The component (0/1) as uint8 at 2× (each pixel a 2 × 2 block), padded by one sub-pixel,
    with each diagonal-only touch bridged by one sub-pixel of a background neighbour."""
    h, w = component.shape
    fine = np.zeros((2 * h + 2, 2 * w + 2), np.uint8)
    fine[1:-1, 1:-1] = cv2.resize(component, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    m = component.view(bool)
    a, b, c, d = m[:-1, :-1], m[:-1, 1:], m[1:, :-1], m[1:, 1:]  # 2 × 2 windows: a b / c d
    rows, cols = np.nonzero(a & d & ~b & ~c)  # a touches d: fill b's bottom-left sub-pixel
    fine[2 * rows + 2, 2 * cols + 3] = 1
    rows, cols = np.nonzero(b & c & ~a & ~d)  # b touches c: fill a's bottom-right sub-pixel
    fine[2 * rows + 2, 2 * cols + 2] = 1
    return fine


def _coordinates(polygon: shapely.Polygon) -> list[Ring]:
    """GeoJSON Polygon coordinates (closed rings, exterior first) of a shapely polygon."""
    rings = [shapely.get_coordinates(ring) for ring in [polygon.exterior, *polygon.interiors]]
    # Pixel edges are whole numbers: written without a fraction, the body is a fifth smaller.
    return [(ring.astype(np.int64) if not (ring % 1).any() else ring).tolist() for ring in rings]
