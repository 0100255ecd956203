import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from app.encode import (
    PER_CLASS_COUNT_MAX,
    areas,
    class_counts,
    column_major,
    grey_png,
    mask_png,
    overlay_png,
    rle_by_class,
)
from model.classes import default_palette
from tests.support.service import coco_decode
from tests.tiny import CLASSES


def test_uncompressed_rle_is_column_major_and_starts_with_zeros():
    mask = np.array([[1, 0], [1, 1]], np.uint8)  # columns: (1, 1), (0, 1)
    by_class = {e["index"]: e["counts"] for e in rle_by_class(mask, CLASSES, compressed=False)}
    assert by_class == {1: [0, 2, 1, 1], 0: [2, 1, 1]}


@pytest.mark.parametrize("shape", [(1, 1), (7, 600), (33, 17), (5, 5)])
def test_uncompressed_rle_per_class_rebuilds_the_mask(shape):
    mask = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint8)
    rebuilt = np.full(shape, 255, np.uint8)
    for entry in rle_by_class(mask, CLASSES, compressed=False):
        assert entry["size"] == list(shape) and entry["class"] == CLASSES[entry["index"]]
        part = coco_decode(entry["counts"], *shape).astype(bool)
        assert (rebuilt[part] == 255).all()
        rebuilt[part] = entry["index"]
    assert np.array_equal(rebuilt, mask)


@pytest.mark.parametrize("shape", [(1, 1), (7, 600), (33, 17), (300, 200)])
def test_compressed_rle_decodes_with_pycocotools_to_each_class(shape):
    mask = np.random.default_rng(1).integers(0, 3, shape).astype(np.uint8)
    for entry in rle_by_class(mask, CLASSES):
        assert isinstance(entry["counts"], str) and entry["size"] == list(shape)
        decoded = coco_mask.decode({"size": entry["size"], "counts": entry["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), mask == entry["index"])


def test_rle_lists_only_present_classes():
    assert [e["index"] for e in rle_by_class(np.full((3, 3), 2, np.uint8), CLASSES)] == [2]


def test_png_is_palette_mode_with_class_indices():
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    image = Image.open(io.BytesIO(mask_png(mask, default_palette(3))))
    assert image.mode == "P" and image.size == (2, 2)
    assert np.array_equal(np.asarray(image), mask)
    assert image.getpalette()[:9] == [c for rgb in default_palette(3) for c in rgb]


@pytest.mark.parametrize("shape", [(1, 1), (1, 700), (700, 1), (37, 53), (256, 256)])
def test_png_reads_back_as_the_mask_at_any_shape_with_valid_chunks(shape):
    mask = np.random.default_rng(2).integers(0, 7, shape).astype(np.uint8)
    mask[: shape[0] // 2] = 3  # runs, as in a label map, beside noise
    png = mask_png(mask, default_palette(7))
    with Image.open(io.BytesIO(png)) as image:
        image.verify()  # every chunk's CRC, IDAT's included
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "P" and image.size == shape[::-1]
        assert np.array_equal(np.asarray(image), mask)


@pytest.mark.parametrize("shape", [(1, 1), (3, 500), (64, 48)])
def test_grey_png_reads_back_as_the_values_in_mode_l(shape):
    values = (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 7 % 256).astype(np.uint8)
    png = grey_png(values)
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    with Image.open(io.BytesIO(png)) as image:
        assert image.mode == "L" and image.size == shape[::-1]
        assert np.array_equal(np.asarray(image), values)


@pytest.mark.parametrize("block_bytes", [1, 64, 1000])
def test_a_png_written_a_band_of_rows_at_a_time_reads_back_whole(monkeypatch, block_bytes):
    import app.encode
    monkeypatch.setattr(app.encode, "PNG_BLOCK_BYTES", block_bytes)  # 1 row, a few, all 37
    mask = np.random.default_rng(5).integers(0, 7, (37, 53)).astype(np.uint8)
    for png in (mask_png(mask, default_palette(7)), grey_png(mask * 30)):
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
        with Image.open(io.BytesIO(png)) as image:
            assert np.array_equal(np.asarray(image), mask * (30 if image.mode == "L" else 1))


def test_areas_cover_every_class_and_sum_to_one():
    result = areas(np.array([[0, 0, 1, 1]], np.uint8), CLASSES)
    assert result == {"background": 0.5, "a": 0.5, "b": 0.0}


def test_overlay_colours_objects_and_leaves_background():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [0, 2]], np.uint8)
    out = np.asarray(Image.open(io.BytesIO(overlay_png(image, mask, default_palette(3)))))
    assert out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [165, 62, 88]  # halfway to (230, 25, 75)


def test_a_mask_in_any_integer_dtype_encodes_as_its_uint8_values():
    mask = np.arange(12).reshape(3, 4) % len(CLASSES)
    png = mask_png(mask.astype(np.int64), default_palette(len(CLASSES)))
    assert png == mask_png(mask.astype(np.uint8), default_palette(len(CLASSES)))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), mask)


def test_palette_entries_past_the_classes_are_black():
    palette = [[10, 20, 30], [40, 50, 60]]
    with Image.open(io.BytesIO(mask_png(np.zeros((2, 2), np.uint8), palette))) as im:
        entries = im.getpalette()
    assert entries[:6] == [10, 20, 30, 40, 50, 60]
    assert set(entries[6:]) == {0}


@pytest.mark.parametrize("num_classes", [2, 7, PER_CLASS_COUNT_MAX, PER_CLASS_COUNT_MAX + 1, 91])
def test_class_counts_are_the_histogram_of_the_mask_either_way(num_classes):
    mask = np.random.default_rng(3).integers(0, num_classes, (61, 47)).astype(np.uint8)
    mask[:, :9] = num_classes - 1  # one class far more common than the rest
    counts = class_counts(mask, num_classes)
    assert counts.dtype == np.int64 and counts.shape == (num_classes,)
    assert counts.tolist() == np.bincount(mask.ravel(), minlength=num_classes).tolist()


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (37, 53)])
def test_column_major_is_the_mask_in_fortran_order(shape):
    mask = np.random.default_rng(4).integers(0, 7, shape).astype(np.uint8)
    columns = column_major(mask)
    assert columns.flags.f_contiguous and np.array_equal(columns, mask)


def test_areas_are_rounded_to_six_decimals():
    mask = np.array([[0, 1, 1]], np.uint8)
    assert areas(mask, ["a", "b"]) == {"a": 0.333333, "b": 0.666667}
