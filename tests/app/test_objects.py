"""Objects and polygons on label masks with known shapes (app/objects.py)."""

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from app.objects import feature_collection, find_objects

CLASSES = ["background", "disc", "square", "ring"]


def scene(seed: int, size: int = 240) -> tuple[np.ndarray, dict[int, int]]:
    """A mask of discs, squares and rings placed on a grid so that no two touch, and how many
    of each class it holds."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    counts = {1: 0, 2: 0, 3: 0}
    cell = 60
    for top in range(0, size, cell):
        for left in range(0, size, cell):
            kind = int(rng.integers(0, 4))
            if kind == 0:
                continue
            cy, cx = top + cell / 2 + rng.uniform(-4, 4), left + cell / 2 + rng.uniform(-4, 4)
            radius = rng.uniform(12, 24)
            if kind == 1:
                inside = np.hypot(yy - cy, xx - cx) < radius
            elif kind == 2:
                inside = (abs(yy - cy) < radius * 0.8) & (abs(xx - cx) < radius * 0.8)
            else:
                r = np.hypot(yy - cy, xx - cx)
                inside = (r < radius) & (r >= radius * 0.5)
            mask[inside] = kind
            counts[kind] += 1
    return mask, counts


def component(mask: np.ndarray, obj: dict) -> np.ndarray:
    """The object's pixels as a boolean image (its bbox holds only it in these scenes)."""
    x, y, w, h = obj["bbox"]
    out = np.zeros(mask.shape, bool)
    out[y:y + h, x:x + w] = mask[y:y + h, x:x + w] == obj["index"]
    return out


def rasterised(polygon: dict, shape_hw: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre lies inside the polygon."""
    yy, xx = np.mgrid[:shape_hw[0], :shape_hw[1]]
    return shapely.contains_xy(shape(polygon), xx + 0.5, yy + 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("seed", range(4))
def test_object_count_per_class_equals_the_shapes_drawn(seed):
    mask, counts = scene(seed)
    objects = find_objects(mask, CLASSES)
    assert {k: sum(o["index"] == k for o in objects) for k in counts} == counts


@pytest.mark.parametrize("seed", range(4))
def test_bbox_and_area_are_the_components_exactly(seed):
    mask, _ = scene(seed)
    for obj in find_objects(mask, CLASSES):
        pixels = component(mask, obj)
        ys, xs = np.nonzero(pixels)
        assert obj["area"] == pixels.sum()
        assert obj["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert obj["centroid"] == pytest.approx([xs.mean() + 0.5, ys.mean() + 0.5], abs=1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_polygons_rasterise_back_to_their_component(seed):
    mask, _ = scene(seed)
    for obj in find_objects(mask, CLASSES):  # default tolerance
        assert iou(rasterised(obj["polygon"], mask.shape), component(mask, obj)) >= 0.98


@pytest.mark.parametrize("seed", range(2))
def test_unsimplified_polygons_rasterise_back_exactly(seed):
    mask, _ = scene(seed)
    for obj in find_objects(mask, CLASSES, tolerance=0):
        assert np.array_equal(rasterised(obj["polygon"], mask.shape), component(mask, obj))


def test_a_ring_has_one_hole_and_a_disc_none():
    mask, _ = scene(0)
    for obj in find_objects(mask, CLASSES):
        assert len(obj["polygon"]["coordinates"]) == (2 if obj["class"] == "ring" else 1)


@pytest.mark.parametrize("tolerance", [0, 0.5, 2.0])
def test_polygons_are_valid_closed_and_oriented_as_rfc_7946_asks(tolerance):
    mask, _ = scene(1)
    for obj in find_objects(mask, CLASSES, tolerance=tolerance):
        geometry = shape(obj["polygon"])
        assert geometry.is_valid, shapely.is_valid_reason(geometry)
        rings = obj["polygon"]["coordinates"]
        assert all(ring[0] == ring[-1] for ring in rings)
        assert geometry.exterior.is_ccw and not any(hole.is_ccw for hole in geometry.interiors)


def test_rings_stay_within_the_tolerance_of_the_pixel_edges():
    mask, _ = scene(2)
    for obj in find_objects(mask, CLASSES, tolerance=0.5):
        pixels = component(mask, obj)
        ys, xs = np.nonzero(pixels)
        exact = shapely.union_all(shapely.box(xs, ys, xs + 1, ys + 1))
        drawn = shape(obj["polygon"])
        assert drawn.hausdorff_distance(exact) <= 0.5 + 1e-9


def test_diagonal_touches_join_pixels_and_still_give_a_valid_polygon():
    mask = np.zeros((6, 6), np.uint8)
    mask[[1, 2, 3, 2], [1, 2, 3, 4]] = 1  # a diagonal chain, with a fork
    (obj,) = find_objects(mask, CLASSES, tolerance=0)
    assert obj["area"] == 4 and shape(obj["polygon"]).is_valid
    assert np.array_equal(rasterised(obj["polygon"], mask.shape), mask == 1)


def test_touching_shapes_of_two_classes_are_two_objects():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:6, 2:5] = 1
    mask[2:6, 5:8] = 2
    objects = find_objects(mask, CLASSES)
    assert sorted((o["class"], o["area"]) for o in objects) == [("disc", 12), ("square", 12)]


def test_min_area_leaves_out_exactly_the_smaller_components():
    mask = np.zeros((20, 20), np.uint8)
    mask[1, 1] = 1
    mask[5:8, 5:8] = 1
    mask[12:16, 12:16] = 2
    assert sorted(o["area"] for o in find_objects(mask, CLASSES, min_area=9)) == [9, 16]


def test_background_has_no_objects():
    assert find_objects(np.zeros((5, 5), np.uint8), CLASSES) == []


def test_score_is_the_mean_confidence_over_the_objects_pixels():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    confidence = np.zeros((8, 8), np.uint8)
    confidence[2:4, 2:4] = [[255, 255], [0, 0]]
    (obj,) = find_objects(mask, CLASSES, confidence)
    assert obj["score"] == pytest.approx(0.5)


def test_feature_collection_carries_each_object_as_a_feature():
    mask, _ = scene(3)
    objects = find_objects(mask, CLASSES)
    collection = feature_collection(objects, width=240, height=240)
    assert collection["type"] == "FeatureCollection" and collection["width"] == 240
    assert len(collection["features"]) == len(objects)
    first = collection["features"][0]
    assert first["geometry"] == objects[0]["polygon"]
    assert first["properties"]["class"] == objects[0]["class"] and "polygon" not in first[
        "properties"]


def test_the_default_tolerance_drops_vertices_that_tolerance_zero_keeps():
    mask, _ = scene(0)
    exact = find_objects(mask, CLASSES, tolerance=0)
    default = find_objects(mask, CLASSES)
    for a, b in zip(exact, default, strict=True):
        if a["class"] == "disc":
            assert len(b["polygon"]["coordinates"][0]) < len(a["polygon"]["coordinates"][0])


def reference_components(mask: np.ndarray, min_area: int = 1) -> list[tuple]:
    """Each class's 8-connected components found one class at a time with OpenCV's labelling:
    (class index, bbox, area, centroid), in the order find_objects promises (reading order)."""
    found = []
    for index in range(1, int(mask.max()) + 1):
        count, labels, stats, centres = cv2.connectedComponentsWithStats(
            (mask == index).astype(np.uint8), connectivity=8)
        for k in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area >= min_area:
                found.append((index, [x, y, w, h], area,
                              [round(centres[k][0] + 0.5, 3), round(centres[k][1] + 0.5, 3)]))
    return sorted(found, key=lambda c: (c[1][1], c[1][0], c[0]))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("min_area", [1, 9])  # 9: a lone 3 × 3 block is exactly at the limit
def test_touching_classes_split_exactly_as_one_class_at_a_time(seed, min_area):
    """Blobs of three classes packed so that they touch: the components found in one pass with
    the mixed ones split again equal those found class by class."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (12, 16)).astype(np.uint8)
    mask = np.kron(coarse, np.ones((3, 3), np.uint8))  # 36 × 48 of 3 × 3 blocks
    mask[rng.random(mask.shape) < 0.05] = 0  # a few holes and single-pixel notches
    mask = np.pad(mask, ((5, 0), (7, 0)))  # nothing at the origin: offsets must be added
    confidence = rng.integers(0, 256, mask.shape).astype(np.uint8)
    objects = find_objects(mask, CLASSES, confidence, min_area=min_area, tolerance=0)
    assert any(o["bbox"][:2] != [7, 5] for o in objects)
    got = [(o["index"], o["bbox"], o["area"], o["centroid"]) for o in objects]
    assert got == reference_components(mask, min_area)
    for obj in objects:  # its pixels: its class's, inside its polygon; its score: their mean
        x, y, w, h = obj["bbox"]
        yy, xx = np.mgrid[y:y + h, x:x + w]
        own = (shapely.contains_xy(shape(obj["polygon"]), xx + 0.5, yy + 0.5)
               & (mask[y:y + h, x:x + w] == obj["index"]))
        assert own.sum() == obj["area"]
        assert obj["score"] == round(confidence[y:y + h, x:x + w][own].mean() / 255, 4)


def test_a_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance must be ≥ 0, got -1"):
        find_objects(np.ones((3, 3), np.uint8), CLASSES, tolerance=-1)


def test_features_are_geojson_features():
    (feature,) = feature_collection(find_objects(np.ones((3, 3), np.uint8), CLASSES))["features"]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"


def test_by_default_a_single_pixel_is_an_object_and_without_confidence_it_has_no_score():
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 3] = 1
    (obj,) = find_objects(mask, CLASSES)
    assert (obj["area"], obj["bbox"], obj["score"]) == (1, [3, 2, 1, 1], None)


def rings_of(mask: np.ndarray, tolerance: float = 0) -> list:
    (obj,) = find_objects(mask, ["background", "a"], tolerance=tolerance)
    return obj["polygon"]["coordinates"]


def test_a_rectangles_ring_is_its_pixel_edges_in_whole_numbers():
    mask = np.zeros((8, 9), np.uint8)
    mask[2:4, 1:4] = 1
    assert rings_of(mask) == [[[4, 2], [4, 4], [1, 4], [1, 2], [4, 2]]]
    assert all(type(v) is int for point in rings_of(mask)[0] for v in point)


def test_a_one_pixel_hole_is_a_clockwise_unit_square():
    mask = np.zeros((7, 7), np.uint8)
    mask[1:6, 1:6] = 1
    mask[3, 3] = 0
    assert rings_of(mask) == [[[6, 1], [6, 6], [1, 6], [1, 1], [6, 1]],
                              [[3, 4], [4, 4], [4, 3], [3, 3], [3, 4]]]


@pytest.mark.parametrize(("pixels", "ring"), [
    ([(1, 1), (2, 2)], [[2.0, 1.0], [2.0, 1.5], [2.5, 1.5], [2.5, 2.0], [3.0, 2.0], [3.0, 3.0],
                        [2.0, 3.0], [2.0, 2.0], [1.0, 2.0], [1.0, 1.0], [2.0, 1.0]]),
    ([(1, 2), (2, 1)], [[3.0, 1.0], [3.0, 2.0], [2.0, 2.0], [2.0, 3.0], [1.0, 3.0], [1.0, 2.0],
                        [1.5, 2.0], [1.5, 1.5], [2.0, 1.5], [2.0, 1.0], [3.0, 1.0]]),
], ids=["down-right", "down-left"])
def test_a_diagonal_touch_is_joined_through_a_half_pixel_notch(pixels, ring):
    mask = np.zeros((4, 4), np.uint8)
    for row, col in pixels:
        mask[row, col] = 1
    assert rings_of(mask) == [ring]


def test_a_polygon_simplifying_would_break_is_simplified_again_and_stays_valid():
    """Douglas–Peucker on each ring alone makes this one cross itself at 2 px; the fallback
    simplifies the whole polygon preserving topology."""
    mask = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    rings = rings_of(mask, tolerance=2.0)
    geometry = shape({"type": "Polygon", "coordinates": rings})
    exact = shape({"type": "Polygon", "coordinates": rings_of(mask)})
    assert geometry.is_valid and geometry.exterior.is_ccw
    assert all(ring[0] == ring[-1] and ring[1] != ring[-1] for ring in rings)
    assert all(a != b for ring in rings for a, b in zip(ring, ring[1:], strict=False))
    assert geometry.hausdorff_distance(exact) <= 2.0


def test_tracing_refuses_a_component_that_is_two():
    from app.outlines import trace
    pixels = np.array([[1, 0, 0], [0, 0, 1]], np.uint8)
    with pytest.raises(ValueError, match="expected one 8-connected component, found 2"):
        trace([(pixels, 0, 0)])


def test_a_staircase_triangle_simplifies_to_its_three_corners():
    """Douglas–Peucker runs on the closed ring: the tracer's starting point, mid-staircase,
    is not kept as a fourth vertex."""
    mask = np.zeros((24, 24), np.uint8)
    for row in range(2, 22):
        mask[row, 2:row + 1] = 1
    assert rings_of(mask, tolerance=1.0) == [[[22, 22], [2, 22], [2, 2], [22, 22]]]
