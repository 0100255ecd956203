"""`--data` layouts (model/layouts.py): each reads the same scenes into the same classes and
pixel-identical targets as our folder layout, trains, evaluates, and names what is wrong."""

import json

import numpy as np
import pytest
from PIL import Image

from model import evaluate as evaluate_cli
from model import train
from model.checkpoint import load_checkpoint
from model.data import DatasetError, FolderDataset
from model.layouts import VOC_CLASSES, detect, open_dataset
from tests.support.layouts import (
    SYNTHETIC,
    scenes,
    stem,
    write_cityscapes,
    write_coco,
    write_folder,
    write_voc,
)

PAIRS = scenes(4)


def masks(dataset) -> list[np.ndarray]:
    return [dataset[i][1].numpy() for i in range(len(dataset))]


def test_coco_gives_the_folder_layouts_classes_and_masks(tmp_path):
    folder = FolderDataset(write_folder(tmp_path / "folder", PAIRS))
    coco = open_dataset(write_coco(tmp_path / "coco", PAIRS))
    assert coco.classes == folder.classes == SYNTHETIC
    for a, b in zip(masks(coco), masks(folder), strict=True):
        assert np.array_equal(a, b)


def test_a_coco_json_path_finds_its_images_beside_it(tmp_path):
    write_coco(tmp_path, PAIRS, images_dir=".")
    dataset = open_dataset(tmp_path / "annotations.json")
    assert len(dataset) == 4 and np.array_equal(dataset[0][1].numpy(), PAIRS[0][1])


def test_voc_splits_give_the_folder_layouts_masks_under_the_voc_names(tmp_path):
    folder = FolderDataset(write_folder(tmp_path / "folder", PAIRS, classes=VOC_CLASSES))
    root = write_voc(tmp_path / "voc", PAIRS, val=1)
    train_split, val_split = open_dataset(root, split="train"), open_dataset(root, split="val")
    assert train_split.classes == folder.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 21
    assert [len(train_split), len(val_split)] == [3, 1]
    for a, b in zip(masks(train_split) + masks(val_split), masks(folder), strict=True):
        assert np.array_equal(a, b)


def test_cityscapes_label_ids_map_to_the_folder_layouts_masks(tmp_path):
    folder = FolderDataset(write_folder(tmp_path / "folder", PAIRS))
    root, label_map = write_cityscapes(tmp_path / "city", PAIRS, val=1)
    train_split = open_dataset(root, split="train", label_map=label_map)
    val_split = open_dataset(root, split="val", label_map=label_map)
    assert train_split.classes == SYNTHETIC
    for a, b in zip(masks(train_split) + masks(val_split), masks(folder), strict=True):
        assert np.array_equal(a, b)


def test_a_label_map_makes_id_zero_ignored(tmp_path):
    pairs = [(PAIRS[0][0], PAIRS[0][1].copy())]
    root, label_map = write_cityscapes(tmp_path, pairs, val=0)
    gt = next(root.glob("gtFine/train/town/*.png"))
    ids = np.asarray(Image.open(gt)).copy()
    ids[:2] = 0
    Image.fromarray(ids).save(gt)
    mask = open_dataset(root, label_map=label_map)[0][1].numpy()
    assert (mask[:2] == 255).all() and np.array_equal(mask[2:], PAIRS[0][1][2:])


@pytest.mark.parametrize(("writer", "expected"), [
    (lambda p: write_folder(p, PAIRS), "folder"), (lambda p: write_coco(p, PAIRS), "coco"),
    (lambda p: write_voc(p, PAIRS), "voc"), (lambda p: write_cityscapes(p, PAIRS)[0],
                                             "cityscapes")])
def test_the_layout_is_detected(tmp_path, writer, expected):
    assert detect(writer(tmp_path / "d")) == expected


def tiny_training(tmp_path, data, *extra):
    return train.get_args_parser().parse_args([
        "--data", str(data), "--epochs", "1", "--batch-size", "2", "--crop-size", "24",
        "--widths", "4", "8", "--workers", "0", "--warmup-steps", "1", "--no-progress",
        "--out", str(tmp_path / "m.pt"), *extra])


@pytest.mark.parametrize("layout", ["folder", "coco", "voc", "cityscapes"])
def test_one_epoch_trains_from_each_layout(tmp_path, layout):
    extra: list[str] = []
    if layout == "folder":
        data = write_folder(tmp_path / layout, PAIRS)
    elif layout == "coco":
        data = write_coco(tmp_path / layout, PAIRS)
    elif layout == "voc":
        data = write_voc(tmp_path / layout, PAIRS)
    else:
        data, label_map = write_cityscapes(tmp_path / layout, PAIRS)
        extra = ["--label-map", str(label_map)]
    assert train.main(tiny_training(tmp_path, data, *extra)) == 0
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.classes == (list(VOC_CLASSES) if layout == "voc" else SYNTHETIC)
    assert ckpt.training["config"]["data"] == str(data)


def test_evaluate_reads_a_layout_and_writes_the_confusion_png(tmp_path, capsys):
    data = write_voc(tmp_path / "voc", PAIRS)
    assert train.main(tiny_training(tmp_path, data)) == 0
    args = evaluate_cli.get_args_parser().parse_args(
        [str(tmp_path / "m.pt"), "--data", str(data), "--confusion", str(tmp_path / "c.png")])
    assert evaluate_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| aeroplane |" in out and json.loads(out.strip().splitlines()[-1])["images"] == 1
    png = (tmp_path / "c.png").read_bytes()  # not Image.open: app tests lower PIL's pixel cap
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") > 100


# --- bad datasets: one line naming the file --------------------------------------------------


def bad_message(tmp_path, data, capsys, *extra) -> str:
    assert train.main(tiny_training(tmp_path, data, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" \
        not in err
    return err


def test_a_coco_category_id_not_in_the_json_is_named(tmp_path, capsys):
    root = write_coco(tmp_path / "coco", PAIRS)
    doc = json.loads((root / "annotations.json").read_text())
    doc["annotations"][0]["category_id"] = 99
    (root / "annotations.json").write_text(json.dumps(doc))
    err = bad_message(tmp_path, root, capsys)
    assert "annotations.json" in err and "category_id 99" in err


def test_a_coco_image_missing_from_disk_is_named(tmp_path, capsys):
    root = write_coco(tmp_path / "coco", PAIRS)
    (root / "images" / f"{stem(2)}.png").unlink()
    assert f"image {stem(2)}.png" in bad_message(tmp_path, root, capsys)


def test_a_voc_split_naming_a_missing_image_is_named(tmp_path, capsys):
    root = write_voc(tmp_path / "voc", PAIRS)
    (root / "JPEGImages" / f"{stem(0)}.jpg").unlink()
    err = bad_message(tmp_path, root, capsys)
    assert "train.txt" in err and stem(0) in err and "missing" in err


def test_a_voc_palette_index_outside_the_classes_is_named(tmp_path, capsys):
    root = write_voc(tmp_path / "voc", PAIRS)
    for path in (root / "SegmentationClass").iterdir():
        png = Image.open(path)
        values = np.asarray(png).copy()
        values[0, 0] = 40
        bad = Image.fromarray(values, mode="P")
        bad.putpalette(png.getpalette())
        bad.save(path)
    err = bad_message(tmp_path, root, capsys)
    assert "SegmentationClass" in err and "[40]" in err


def test_a_folder_image_without_mask_is_named(tmp_path, capsys):
    root = write_folder(tmp_path / "folder", PAIRS)
    (root / "masks" / f"{stem(1)}.png").unlink()
    assert f"no mask for image(s) {stem(1)}" in bad_message(tmp_path, root, capsys)


def test_label_ids_without_a_label_map_are_refused(tmp_path, capsys):
    root, _ = write_cityscapes(tmp_path / "city", PAIRS)
    assert "need --label-map" in bad_message(tmp_path, root, capsys)


def test_a_label_id_missing_from_the_map_is_named(tmp_path, capsys):
    root, label_map = write_cityscapes(tmp_path / "city", PAIRS)
    doc = json.loads(label_map.read_text())
    del doc["ids"]["8"]  # class 1
    label_map.write_text(json.dumps(doc))
    err = bad_message(tmp_path, root, capsys, "--label-map", str(label_map))
    assert "gtFine" in err and "label id(s) [8]" in err


def test_an_unknown_layout_lists_what_is_read(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DatasetError, match="COCO .* VOC .* Cityscapes"):
        open_dataset(tmp_path / "stuff")


# --- COCO's rules -----------------------------------------------------------------------------


def coco_doc(tmp_path, annotations) -> FolderDataset:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": annotations}))
    return open_dataset(tmp_path)


def square(x0, y0, x1, y1) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_coco_categories_sort_by_id_and_polygons_fill(tmp_path):
    dataset = coco_doc(tmp_path, [{"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0,
                                   "area": 16, "segmentation": square(2, 2, 6, 6)}])
    assert dataset.classes == ["background", "dog", "cat"]
    mask = dataset[0][1].numpy()
    assert set(np.unique(mask).tolist()) == {0, 2} and 12 <= (mask == 2).sum() <= 25


def test_coco_overlaps_go_to_the_smaller_instance_and_crowds_are_ignored(tmp_path):
    dataset = coco_doc(tmp_path, [
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 64,
         "segmentation": square(0, 0, 8, 8)},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 4,
         "segmentation": square(3, 3, 5, 5)},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "area": 10,
         "segmentation": {"size": [10, 10], "counts": [90, 10]}}])  # the last column
    mask = dataset[0][1].numpy()
    assert mask[4, 4] == 2 and mask[1, 1] == 1  # the small cat on top of the large dog
    assert (mask[:, 9] == 255).all()
