import pytest
import torch
from torch import nn

from model.net import DeconvNet, NetConfig
from model.tiling import Axis, class_mask, sliding_window_logits, sliding_window_mask


class Identity(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("tile,overlap", [(16, 5), (32, 8), (20, 0), (45, 10)])
def test_owned_tiles_stitch_back_to_the_input(tile, overlap):
    x = torch.randn(1, 3, 45, 70)
    out = sliding_window_logits(Identity(), x, num_classes=3, tile=tile, overlap=overlap,
                                batch_size=2)
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (1000, 512, 64), (4032, 512, 64),
                                               (33, 32, 8), (8192, 512, 64)])
def test_axis_plan_spreads_even_tiles_that_overlap_enough(size, tile, overlap):
    axis = Axis.plan(size, tile, overlap)
    gaps = [b - a for a, b in zip(axis.starts, axis.starts[1:], strict=False)]
    assert axis.tile <= tile and axis.starts[0] == 0 and axis.starts[-1] + axis.tile == size
    assert all(axis.tile - gap >= overlap - 1 for gap in gaps)  # rounding: at most 1 px less
    assert max(gaps) - min(gaps) <= 1  # even spread
    assert len(axis.starts) == -(-(size - overlap) // (tile - overlap))  # the fewest tiles
    assert axis.computed <= size + len(axis.starts) * overlap


def test_axis_owned_ranges_partition_the_axis_inside_each_tile():
    axis = Axis.plan(1000, 300, 50)
    owned = axis.owned()
    assert owned[0][0] == 0 and owned[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(owned, owned[1:], strict=False))
    for start, (lo, hi) in zip(axis.starts, owned, strict=True):
        assert start <= lo and hi <= start + axis.tile


def test_an_axis_shorter_than_a_tile_is_one_tile():
    assert Axis.plan(10, tile=32, overlap=8) == Axis(10, 10, (0,))


def test_tiled_inference_matches_whole_image_inference():
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=4, widths=[8, 16, 16])).eval()
    x = torch.randn(1, 3, 96, 130)
    with torch.no_grad():
        whole = model(x).argmax(1)[0]
    tiled = sliding_window_mask(model, x, tile=64, overlap=16, batch_size=3)
    assert tiled.shape == whole.shape and tiled.dtype == torch.uint8
    agreement = (tiled.long() == whole).float().mean().item()
    assert agreement >= 0.999


def test_the_mask_is_the_argmax_of_the_stitched_logits():
    torch.manual_seed(1)
    model = DeconvNet(NetConfig(num_classes=4, widths=[8, 16])).eval()
    x = torch.randn(1, 3, 70, 90)
    logits = sliding_window_logits(model, x, 4, tile=32, overlap=8)
    assert torch.equal(sliding_window_mask(model, x, tile=32, overlap=8),
                       logits[0].argmax(0).to(torch.uint8))


def test_tile_batch_size_bounds_each_forward_pass():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return x

    sliding_window_logits(Recorder(), torch.randn(1, 3, 40, 200), num_classes=3, tile=32,
                          overlap=4, batch_size=3)
    assert max(seen) <= 3 and sum(seen) == 2 * 7  # 2 tile rows × 7 tile columns


def test_bad_tiling_arguments_are_rejected():
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_logits(Identity(), torch.zeros(1, 3, 8, 8), 3, tile=8, overlap=8)


def test_raw_image_through_a_normalising_model_tile_by_tile_matches_a_normalised_image():
    from model.transforms import Preprocess, preprocess

    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=4, widths=[8, 16])).eval()
    raw = torch.randint(0, 256, (3, 90, 70), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    whole = sliding_window_mask(model, preprocess(raw, mean, std)[None], tile=32, overlap=8)
    tiled = sliding_window_mask(torch.nn.Sequential(Preprocess(mean, std), model), raw[None],
                                tile=32, overlap=8)
    assert torch.equal(whole, tiled)


def test_a_one_pixel_tile_is_allowed_and_a_zero_pixel_tile_is_not():
    assert Axis.plan(3, tile=1, overlap=0) == Axis(3, 1, (0, 1, 2))
    with pytest.raises(ValueError, match="tile ≥ 1"):
        Axis.plan(3, tile=0, overlap=0)


def test_maps_compute_confidence_only_when_asked():
    from model.tiling import sliding_window_maps
    x = torch.randn(1, 3, 20, 30)
    mask, top = sliding_window_maps(Identity(), x, tile=16, overlap=4)
    assert top is None and mask.dtype == torch.uint8
    mask2, top2 = sliding_window_maps(Identity(), x, tile=16, overlap=4, confidence=True)
    assert torch.equal(mask, mask2) and top2 is not None
    expected = (x.softmax(1).amax(1)[0] * 255).round().to(torch.uint8)
    assert torch.equal(top2, expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_class_mask_is_the_argmax_with_ties_to_the_first_class(channels_last):
    scores = torch.randn(1, 7, 33, 20)
    scores[0, 2:5, :4] = 9.0  # three classes tied for the top in a corner
    if channels_last:
        scores = scores.contiguous(memory_format=torch.channels_last)
    mask = class_mask(scores[0])
    assert mask.dtype == torch.uint8
    assert torch.equal(mask, scores[0].argmax(0).to(torch.uint8))
    assert (mask[:4] == 2).all()


def test_class_mask_of_bf16_logits_is_that_of_their_float32_copy():
    scores = (torch.randn(1, 7, 40, 24) * 3).to(torch.bfloat16)  # bf16 rounding makes ties
    scores = scores.contiguous(memory_format=torch.channels_last)
    assert (scores[0].max(0).values == scores[0].float().topk(2, 0).values[1]).any()  # a tie
    assert torch.equal(class_mask(scores[0]), class_mask(scores[0].float()))
