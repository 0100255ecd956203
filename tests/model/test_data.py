import numpy as np
import pytest
import torch
from PIL import Image

from model.classes import IGNORE_INDEX
from model.data import DatasetError, FolderDataset, SyntheticScenes, make_loader, pad_collate


def test_synthetic_scenes_are_deterministic_for_seed_and_index():
    a, b = SyntheticScenes(4, size=64, seed=3), SyntheticScenes(4, size=64, seed=3)
    image_a, mask_a = a[2]
    image_b, mask_b = b[2]
    assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    other_image, _ = SyntheticScenes(4, size=64, seed=4)[2]
    assert not torch.equal(image_a, other_image)


def test_synthetic_scenes_cover_background_and_every_foreground_class():
    ds = SyntheticScenes(40, size=96, seed=0)
    assert len(ds.classes) >= 6
    seen = set()
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 96, 96) and image.dtype == torch.uint8
        assert mask.shape == (96, 96)
        seen |= set(mask.unique().tolist())
    assert seen == set(range(len(ds.classes)))


def test_synthetic_scene_index_out_of_range_raises():
    with pytest.raises(IndexError):
        SyntheticScenes(2, size=16)[2]


def write_folder(root, pairs, classes=("background", "thing")):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for stem, (image_size, mask_array) in pairs.items():
        Image.new("RGB", image_size, (10, 20, 30)).save(root / "images" / f"{stem}.jpg")
        if mask_array is not None:
            Image.fromarray(mask_array).save(root / "masks" / f"{stem}.png")


def test_folder_dataset_reads_pairs_and_ignore_value(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[0, 0] = IGNORE_INDEX
    mask[2:4, 2:4] = 1
    write_folder(tmp_path, {"a": ((8, 6), mask)})
    ds = FolderDataset(tmp_path)
    image, m = ds[0]
    assert ds.classes == ["background", "thing"]
    assert image.shape == (3, 6, 8)
    assert m[0, 0] == IGNORE_INDEX and m[2, 2] == 1


def test_folder_dataset_names_image_without_mask(tmp_path):
    write_folder(tmp_path, {"lonely": ((8, 6), None)})
    with pytest.raises(DatasetError, match="no mask for image.*lonely"):
        FolderDataset(tmp_path)


def test_folder_dataset_names_size_mismatch(tmp_path):
    write_folder(tmp_path, {"a": ((8, 6), np.zeros((5, 5), np.uint8))})
    with pytest.raises(DatasetError, match=r"a\.png: size 5×5 differs from image a\.jpg 8×6"):
        FolderDataset(tmp_path)[0]


def test_folder_dataset_names_unknown_class_value(tmp_path):
    mask = np.full((6, 8), 7, np.uint8)
    write_folder(tmp_path, {"a": ((8, 6), mask)})
    with pytest.raises(DatasetError, match=r"class value\(s\) \[7\] not in classes.txt"):
        FolderDataset(tmp_path)[0]


def test_folder_dataset_requires_classes_file(tmp_path):
    write_folder(tmp_path, {"a": ((8, 6), np.zeros((6, 8), np.uint8))})
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="classes.txt: missing"):
        FolderDataset(tmp_path)


def test_pad_collate_pads_masks_with_ignore_index():
    small = (torch.ones(3, 2, 2), torch.zeros(2, 2, dtype=torch.long))
    big = (torch.ones(3, 3, 4), torch.zeros(3, 4, dtype=torch.long))
    images, masks = pad_collate([small, big])
    assert images.shape == (2, 3, 3, 4) and masks.shape == (2, 3, 4)
    assert masks[0, 2, 3] == IGNORE_INDEX and images[0, :, 2, 3].eq(0).all()


def test_loader_order_depends_only_on_seed():
    ds = SyntheticScenes(8, size=16, seed=0)

    def first_masks(seed):
        return next(iter(make_loader(ds, 4, shuffle=True, seed=seed)))[1]

    assert torch.equal(first_masks(1), first_masks(1))
    assert not torch.equal(first_masks(1), first_masks(2))
