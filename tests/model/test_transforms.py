import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from model.classes import IGNORE_INDEX
from model.data import SyntheticScenes
from model.net import DeconvNet, NetConfig
from model.transforms import (
    Preprocess,
    SegCutMix,
    SegMixUp,
    dice_loss,
    eval_transforms,
    one_hot_targets,
    preprocess,
    segmentation_loss,
    train_transforms,
)


def encoded_batch(batch=4, size=16, classes=5):
    """Images whose first channel equals the mask value, so alignment is checkable."""
    masks = torch.randint(0, classes, (batch, size, size))
    images = torch.stack([masks.float(), torch.zeros_like(masks.float()),
                          torch.zeros_like(masks.float())], 1)
    return images, masks


def test_cutmix_pastes_same_box_into_images_and_masks():
    torch.manual_seed(0)
    images, masks = encoded_batch()
    mixed_images, mixed_masks, lam = SegCutMix(num_classes=5, alpha=1.0)(images, masks)
    assert torch.equal(mixed_images[:, 0].long(), mixed_masks)
    changed = (mixed_masks != masks).float().mean().item()
    assert 0.0 < lam < 1.0 and changed <= 1 - lam + 1e-6


def test_mixup_mixes_images_and_soft_targets_with_one_lambda():
    torch.manual_seed(0)
    images, masks = encoded_batch()
    mixed_images, targets, lam = SegMixUp(num_classes=5, alpha=0.4)(images, masks)
    rolled = masks.roll(1, 0)
    expected = lam * masks.float() + (1 - lam) * rolled.float()
    torch.testing.assert_close(mixed_images[:, 0], expected)
    torch.testing.assert_close(targets.sum(1), torch.ones_like(expected))
    # Expected class value under the soft target equals the mixed image's encoded value.
    class_values = torch.arange(5.0).view(1, 5, 1, 1)
    torch.testing.assert_close((targets * class_values).sum(1), expected)


def test_mixup_ignores_pixels_ignored_in_either_source():
    images, masks = encoded_batch(batch=2)
    masks[0, 0, 0] = IGNORE_INDEX
    _, targets, _ = SegMixUp(num_classes=5)(images, masks)
    assert targets[0, :, 0, 0].sum() == 0 and targets[1, :, 0, 0].sum() == 0


def test_soft_loss_equals_hard_loss_for_one_hot_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    masks = torch.randint(0, 4, (2, 5, 5))
    masks[0, 0] = IGNORE_INDEX
    hard = segmentation_loss(logits, masks)
    soft = segmentation_loss(logits, one_hot_targets(masks, 4))
    torch.testing.assert_close(soft, hard)
    torch.testing.assert_close(hard, F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX))


def dice_by_hand(probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """1 − mean over classes of (2·Σ p·t + 1) / (Σ p + Σ t + 1), ignored pixels dropped."""
    keep = masks != IGNORE_INDEX
    scores = []
    for c in range(probs.shape[1]):
        p, t = probs[:, c][keep], (masks[keep] == c).float()
        scores.append((2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1))
    return 1 - torch.stack(scores).mean()


def test_dice_loss_is_one_minus_the_mean_soft_dice_over_classes_without_ignored_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5)
    masks = torch.randint(0, 4, (2, 6, 5))
    masks[1, :2] = IGNORE_INDEX
    expected = dice_by_hand(logits.softmax(1), masks)
    torch.testing.assert_close(dice_loss(logits, masks), expected)
    torch.testing.assert_close(dice_loss(logits, one_hot_targets(masks, 4)), expected)


def test_dice_loss_is_near_zero_for_a_confident_right_answer_and_large_for_a_wrong_one():
    masks = torch.randint(0, 3, (2, 8, 8))
    right = one_hot_targets(masks, 3) * 40.0
    wrong = one_hot_targets((masks + 1) % 3, 3) * 40.0
    assert dice_loss(right, masks) < 1e-6
    assert dice_loss(wrong, masks) > 0.95


def test_dice_weight_adds_the_dice_term_to_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    masks = torch.randint(0, 4, (2, 5, 5))
    torch.testing.assert_close(segmentation_loss(logits, masks, dice_weight=0.5),
                               segmentation_loss(logits, masks) + 0.5 * dice_loss(logits, masks))


def test_train_transforms_keep_mask_aligned_and_pad_with_ignore():
    torch.manual_seed(0)
    mask = torch.randint(0, 6, (40, 40))
    image = torch.stack([mask * 40, mask * 0, mask * 0]).to(torch.uint8)
    tf = train_transforms(48, mean=(0, 0, 0), std=(1, 1, 1), scale_range=(1.0, 1.0),
                          color_jitter=0.0)
    out_image, out_mask = tf(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert out_image.shape == (3, 48, 48) and out_mask.shape == (48, 48)
    padded = out_mask == IGNORE_INDEX
    assert padded.any()  # 40 → 48 needs padding
    valid = ~padded
    torch.testing.assert_close(out_image[0][valid], out_mask[valid].float() * 40 / 255)


def test_scale_jitter_resamples_masks_with_nearest():
    torch.manual_seed(1)
    mask = torch.randint(0, 6, (64, 64))
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    tf = train_transforms(64, scale_range=(0.7, 1.4))
    _, out_mask = tf(tv_tensors.Image(image), tv_tensors.Mask(mask))
    values = set(out_mask.unique().tolist())
    assert values <= set(range(6)) | {IGNORE_INDEX}


def test_preprocess_makes_one_float_copy_in_the_channels_last_layout():
    array = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    array.flags.writeable = False  # as a decoded upload is
    x = preprocess(array, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (3, 6, 9) and x.permute(1, 2, 0).is_contiguous()  # (H, W, 3) in memory
    assert x.untyped_storage().nbytes() == array.size * 4  # one float copy, nothing more


def test_preprocess_is_the_eval_pipeline():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = preprocess(array, mean, std)
    expected = (torch.from_numpy(array).permute(2, 0, 1).float() / 255
                - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    joint_image, _ = eval_transforms(mean, std)(
        tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1)),
        tv_tensors.Mask(torch.zeros(5, 7, dtype=torch.long)))
    torch.testing.assert_close(x, joint_image.as_subclass(torch.Tensor))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_preprocess_module_gives_the_eval_pipeline_bit_for_bit():
    """What the service's frozen graph runs in front of the network, on a channels-last batch."""
    rng = np.random.default_rng(3)
    arrays = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    batch = torch.from_numpy(arrays).permute(0, 3, 1, 2)  # (2, 3, 5, 7), channels-last
    out = torch.jit.script(Preprocess(mean, std))(batch)
    for i, array in enumerate(arrays):
        assert torch.equal(out[i], preprocess(array, mean, std))
    assert torch.equal(batch, torch.from_numpy(arrays).permute(0, 3, 1, 2))  # pixels untouched


def test_the_preprocess_module_takes_float_pixels_in_0_1_without_changing_them():
    pixels = torch.rand(1, 3, 4, 6)
    before = pixels.clone()
    out = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(pixels)
    torch.testing.assert_close(out, (before - 0.5) / 0.25)
    assert torch.equal(pixels, before)


def test_color_jitter_changes_the_image_only():
    torch.manual_seed(2)
    mask = torch.randint(0, 6, (32, 32))
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    tf = train_transforms(32, mean=(0, 0, 0), std=(1, 1, 1), scale_range=(1.0, 1.0),
                          color_jitter=0.5)
    out_image, out_mask = tf(tv_tensors.Image(image), tv_tensors.Mask(mask))
    flips = [mask, mask.flip(-1), mask.flip(-2), mask.flip(-1).flip(-2)]
    assert any(torch.equal(out_mask, f) for f in flips)  # only geometry touched the mask
    plain = [image.float() / 255, image.flip(-1).float() / 255, image.flip(-2).float() / 255,
             image.flip(-1).flip(-2).float() / 255]
    assert not any(torch.allclose(out_image, p) for p in plain)


def test_train_transforms_without_geometry_or_jitter_are_the_eval_transforms():
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 3, (20, 20)))
    mean, std = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]
    trained = train_transforms(20, mean, std, (1.0, 1.0), 0.0, flips=False)(image, mask)
    evaluated = eval_transforms(mean, std)(image, mask)
    torch.testing.assert_close(trained[0], evaluated[0], rtol=0, atol=0)
    assert torch.equal(trained[1], mask) and torch.equal(evaluated[1], mask)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_lambda_is_the_share_of_each_image_not_pasted(seed):
    torch.manual_seed(seed)
    batch, size = 3, 16
    images = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(
        batch, 3, size, size).clone()  # image b is all b: a pasted pixel shows b - 1
    masks = torch.arange(batch).view(batch, 1, 1).expand(batch, size, size).clone()
    mixed, mixed_masks, lam = SegCutMix(num_classes=batch, alpha=1.0)(images, masks)
    pasted = (mixed[:, 0] != images[:, 0]).float().mean(dim=(1, 2))
    assert torch.allclose(pasted, torch.full((batch,), 1 - lam))
    assert torch.equal(mixed_masks, mixed[:, 0].long())


def test_a_few_steps_on_a_fixed_batch_lower_the_loss():
    torch.manual_seed(0)
    data = SyntheticScenes(8, size=32, seed=4, transform=eval_transforms())
    images = torch.stack([data[i][0] for i in range(8)])
    masks = torch.stack([data[i][1] for i in range(8)])
    model = DeconvNet(NetConfig(num_classes=7, widths=[8, 16]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = segmentation_loss(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_preprocess_takes_a_read_only_array_without_a_warning():
    image = np.zeros((4, 5, 3), np.uint8)
    image.flags.writeable = False  # as a decoded upload can be
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert preprocess(image, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).shape == (3, 4, 5)


def _two_masks(size=64):
    """A batch of two: image/mask 0 all 0, image/mask 1 all 1, so what CutMix pastes into
    image 0 is exactly where its mask reads 1."""
    images = torch.stack([torch.zeros(3, size, size), torch.ones(3, size, size)])
    masks = torch.stack([torch.zeros(size, size, dtype=torch.long),
                         torch.ones(size, size, dtype=torch.long)])
    return images, masks


def _pasted_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_cutmix_box_sides_are_the_sqrt_of_the_pasted_share_and_clip_at_the_edges():
    """λ = 0.75: the box is 2·⌊0.5·√0.25·64⌋ = 32 px a side, a quarter of the image, wherever
    it is not cut by an edge; a cut box ends exactly at that edge (0 or 64)."""
    cutmix = SegCutMix(num_classes=2)
    cutmix._sample_lambda = lambda: 0.75
    torch.manual_seed(0)
    sides, clipped_at_start = set(), 0
    for _ in range(200):
        _, mixed, lam = cutmix(*_two_masks())
        x1, y1, x2, y2 = _pasted_box(mixed[0])
        for lo, hi in ((x1, x2), (y1, y2)):
            sides.add(hi - lo)
            if hi - lo < 32:
                assert lo == 0 or hi == 64
                clipped_at_start += lo == 0
        assert lam == 1 - (x2 - x1) * (y2 - y1) / 64**2
    assert max(sides) == 32 and clipped_at_start > 0


def test_cutmix_and_mixup_with_p_0_change_nothing_and_return_lambda_1():
    images, masks = _two_masks(8)
    out_images, out_masks, lam = SegCutMix(num_classes=2, p=0.0)(images, masks)
    assert lam == 1.0 and torch.equal(out_images, images) and torch.equal(out_masks, masks)
    out_images, targets, lam = SegMixUp(num_classes=2, p=0.0)(images, masks)
    assert lam == 1.0 and torch.equal(out_images, images)
    assert torch.equal(targets, one_hot_targets(masks, 2))


@pytest.mark.parametrize(("images", "masks"), [
    ((2, 3, 4, 4), (3, 4, 4)),  # batch sizes differ
    ((3, 4, 4), (3, 4, 4)),  # images without a batch axis
    ((2, 3, 4, 4), (2, 1, 4, 4)),  # masks with a channel axis
])
@pytest.mark.parametrize("mix", [SegCutMix, SegMixUp])
def test_batch_mixes_name_both_shapes_when_they_do_not_pair(mix, images, masks):
    with pytest.raises(ValueError, match=re.escape(
            f"expected images (B, C, H, W) and masks (B, H, W), got {images} and {masks}")):
        mix(num_classes=2)(torch.zeros(images), torch.zeros(masks, dtype=torch.long))


@pytest.mark.parametrize("mix", [SegCutMix, SegMixUp])
def test_batch_mixes_refuse_masks_of_another_size(mix):
    with pytest.raises(ValueError, match="^images and masks must have the same H, W$"):
        mix(num_classes=2)(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))


def test_one_hot_targets_have_every_class_channel_even_for_absent_classes():
    masks = torch.zeros(1, 2, 2, dtype=torch.long)
    assert one_hot_targets(masks, 3).shape == (1, 3, 2, 2)


def test_one_hot_targets_of_a_single_class_zero_the_ignored_pixels():
    masks = torch.tensor([[[0, IGNORE_INDEX]]])
    assert one_hot_targets(masks, 1).tolist() == [[[[1.0, 0.0]]]]
