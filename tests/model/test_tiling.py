import pytest
import torch
from torch import nn

from model.net import DeconvNet, NetConfig
from model.tiling import Axis, sliding_window_logits, sliding_window_mask


class Identity(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("window", ["uniform", "hann"])
@pytest.mark.parametrize("tile,overlap", [(16, 5), (32, 8), (20, 0)])
def test_overlapping_tiles_average_back_to_the_input(tile, overlap, window):
    x = torch.randn(1, 3, 45, 70)
    out = sliding_window_logits(Identity(), x, num_classes=3, tile=tile, overlap=overlap,
                                batch_size=2, window=window)
    torch.testing.assert_close(out, x)


def test_axis_plan_covers_the_image():
    axis = Axis.plan(100, tile=32, overlap=8)
    assert axis.padded >= 100 and axis.stride == 24 and axis.count == 4
    assert Axis.plan(10, tile=32, overlap=8) == Axis(10, 10, 1)


def test_tiled_inference_matches_whole_image_inference():
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=4, widths=[8, 16, 16])).eval()
    x = torch.randn(1, 3, 96, 130)
    with torch.no_grad():
        whole = model(x).argmax(1)[0]
    tiled = sliding_window_mask(model, x, num_classes=4, tile=64, overlap=16, batch_size=3)
    assert tiled.shape == whole.shape and tiled.dtype == torch.uint8
    agreement = (tiled.long() == whole).float().mean().item()
    assert agreement >= 0.99


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


def test_raw_image_normalised_band_by_band_matches_a_normalised_image():
    from model.transforms import preprocess

    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=4, widths=[8, 16])).eval()
    raw = torch.randint(0, 256, (3, 90, 70), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    whole = sliding_window_mask(model, preprocess(raw, mean, std)[None], 4, tile=32, overlap=8)
    banded = sliding_window_mask(model, raw[None], 4, tile=32, overlap=8,
                                 normalize=lambda band: preprocess(band[0], mean, std)[None])
    assert torch.equal(whole, banded)
