"""Components → GeoJSON polygon coordinates that follow their pixel edges (app/objects.py has
the conventions).

Each component is upsampled 2× (a pixel becomes a 2 × 2 block, and a diagonal-only touch is
bridged by one sub-pixel, so no ring passes through a corner twice) and traced with OpenCV:
exterior and holes, through the centres of the border sub-pixels. The rest runs once over the
borders of all components together: each diagonal step goes round through the foreground
sub-pixel beside it, and each corner of the resulting rectilinear path moves half a sub-pixel
out, onto the pixel edges. Then each ring is simplified (Douglas–Peucker), oriented and
checked: a polygon that simplifying made invalid is simplified again preserving topology.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import shapely

Ring = list[list[float]]


class Borders(NamedTuple):
    """Traced borders of many components, in one 2×-grid (corner k ↔ image (k - 1) / 2)."""

    points: np.ndarray  # (N, 2) int64: the border sub-pixels (column, row), ring after ring
    lengths: np.ndarray  # (R,) points per ring
    holes: np.ndarray  # (R,) bool
    owners: np.ndarray  # (R,) the component each ring belongs to


def polygons(components: Sequence[tuple[np.ndarray, int, int]],
             tolerance: float) -> list[list[Ring]]:
    """(0/1 uint8 pixels over its bbox, x, y) per component → its polygon's coordinates."""
    borders = trace(components)
    vertices, lengths, areas = pixel_edges(borders)
    starts = np.cumsum(lengths) - lengths
    rings = []
    for start, length, area, hole in zip(starts.tolist(), lengths.tolist(), areas.tolist(),
                                         borders.holes.tolist(), strict=True):
        ring = vertices[start:start + length]
        if tolerance > 0:
            simplified = cv2.approxPolyDP(ring, 2 * tolerance, closed=True)[:, 0]
            if len(simplified) >= 3 and cv2.contourArea(simplified) != 0:
                ring = simplified
        if (area > 0) == hole:  # RFC 7946: exterior counter-clockwise, holes clockwise
            ring = ring[::-1]
        rings.append((ring.astype(np.float64) - 1) / 2)
    by_owner: list[list[np.ndarray]] = [[] for _ in components]
    for owner, ring in zip(borders.owners.tolist(), rings, strict=True):
        by_owner[owner].append(ring)
    closed = [np.concatenate([ring, ring[:1]]) for ring in rings]
    ring_ends = np.cumsum([len(ring) for ring in closed])
    shapes = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON, np.concatenate(closed),
        (np.concatenate([[0], ring_ends]),
         np.concatenate([[0], np.cumsum(np.bincount(borders.owners))])))
    for i in np.flatnonzero(~shapely.is_valid(shapes)).tolist():
        exact = polygons([components[i]], 0.0)[0]
        fixed = shapely.simplify(shapely.Polygon(exact[0], exact[1:]), tolerance,
                                 preserve_topology=True)
        fixed = shapely.orient_polygons(fixed, exterior_cw=False)
        by_owner[i] = [shapely.get_coordinates(r) for r in [fixed.exterior, *fixed.interiors]]
    return [[_closed(ring) for ring in own] for own in by_owner]


def trace(components: Sequence[tuple[np.ndarray, int, int]]) -> Borders:
    points, lengths, holes, owners = [], [], [], []
    for owner, (pixels, x0, y0) in enumerate(components):
        contours, hierarchy = cv2.findContours(_upsampled(pixels), cv2.RETR_CCOMP,
                                               cv2.CHAIN_APPROX_NONE)
        parents = hierarchy[0][:, 3]
        outer = np.flatnonzero(parents < 0)
        if len(outer) != 1:
            raise ValueError(f"expected one 8-connected component, found {len(outer)}")
        for i in [int(outer[0]), *np.flatnonzero(parents == outer[0]).tolist()]:
            points.append(contours[i][:, 0, :] + (2 * x0, 2 * y0))
            lengths.append(len(contours[i]))
            holes.append(i != outer[0])
            owners.append(owner)
    return Borders(np.concatenate(points).astype(np.int64), np.asarray(lengths),
                   np.asarray(holes, bool), np.asarray(owners))


def pixel_edges(borders: Borders) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ring's corners on the pixel edges, as float32 (M, 2) in 2×-grid corner
    coordinates, with each ring's vertex count and its signed area's sign (of the border as
    traced, which the corners keep)."""
    points, lengths = borders.points, borders.lengths
    steps = points[_following(lengths)] - points
    x, y = points[:, 0], points[:, 1]
    cross = x * (y + steps[:, 1]) - (x + steps[:, 0]) * y
    areas = np.sign(np.add.reduceat(cross, np.cumsum(lengths) - lengths))
    # The outward normal (away from the foreground) of a step (dx, dy) is (dy, -dx) along a
    # ring of positive signed area, the opposite otherwise; along a hole, the other way again.
    outward = np.where((areas > 0) != borders.holes, 1, -1)
    sign = np.repeat(outward, lengths)
    dx, dy = steps[:, 0], steps[:, 1]
    diagonal = (dx != 0) & (dy != 0)
    if diagonal.any():  # go round through the corner sub-pixel on the foreground side
        via_column = sign * dx * dy > 0  # (dx, 0) would be on the outer side
        corner = points + np.where(via_column[:, None], np.stack([0 * dx, dy], 1),
                                   np.stack([dx, 0 * dy], 1))
        counts = 1 + diagonal
        at = np.cumsum(counts) - counts
        expanded = np.empty((int(counts.sum()), 2), np.int64)
        expanded[at] = points
        expanded[at[diagonal] + 1] = corner[diagonal]
        lengths = np.add.reduceat(counts, np.cumsum(borders.lengths) - borders.lengths)
        points, sign = expanded, np.repeat(outward, lengths)
        steps = points[_following(lengths)] - points
    into = steps[_preceding(lengths)]
    turns = (steps != into).any(axis=1)
    normals = (into + steps)[turns]  # both sides' directions; turned a quarter, the normal
    vertices = points[turns] + 0.5 + 0.5 * sign[turns, None] * np.stack(
        [normals[:, 1], -normals[:, 0]], axis=1)
    ring_of_turn = np.repeat(np.arange(len(lengths)), lengths)[turns]
    counts = np.bincount(ring_of_turn, minlength=len(lengths))
    return vertices.astype(np.float32), counts, areas


def _following(lengths: np.ndarray) -> np.ndarray:
    """Index of each point's successor along its ring (the last wraps to the first)."""
    starts = np.cumsum(lengths) - lengths
    index = np.arange(int(lengths.sum())) + 1
    index[starts + lengths - 1] = starts
    return index


def _preceding(lengths: np.ndarray) -> np.ndarray:
    starts = np.cumsum(lengths) - lengths
    index = np.arange(int(lengths.sum())) - 1
    index[starts] = starts + lengths - 1
    return index


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


def _closed(ring: np.ndarray) -> Ring:
    """A closed GeoJSON ring; whole numbers (every pixel edge) written without a fraction, which
    makes the body a fifth smaller."""
    ring = np.asarray(ring)
    if not (ring % 1).any():
        ring = ring.astype(np.int64)
    coordinates = ring.tolist()
    if coordinates[0] != coordinates[-1]:
        coordinates.append(coordinates[0])
    return coordinates
