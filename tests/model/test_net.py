import pytest
import torch
from torch import nn

from model.net import DeconvNet, NetConfig, bilinear_upsample_weight, count_flops
from model.transforms import segmentation_loss

CONFIGS = [NetConfig(num_classes=3, widths=[4, 8]), NetConfig(num_classes=5, widths=[4, 6, 8, 8])]
SIZES = [(1, 1), (2, 3), (7, 600), (33, 17), (31, 64), (65, 65)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"widths{c.widths}")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_output_size_equals_input_size(config, size):
    model = DeconvNet(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, config.in_channels, *size))
    assert out.shape == (2, config.num_classes, *size)


def test_wrong_channel_count_says_which_shape_to_use():
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8]))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 8, 8))


def test_no_lazy_modules_every_layer_states_its_channels():
    model = DeconvNet(NetConfig())
    assert not any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in model.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())


def test_transposed_conv_starts_as_bilinear_upsampler_without_checkerboard():
    up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_upsample_weight(4, 4))
        out = up(torch.ones(1, 4, 5, 5), output_size=(10, 10))
    interior = out[..., :-1, :-1]  # the last row/column sees only half a kernel
    torch.testing.assert_close(interior, torch.ones_like(interior))


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="widths"):
        NetConfig(widths=[8])


def test_flop_count_scales_with_pixels():
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8]))
    small, large = count_flops(model, 32, 32), count_flops(model, 64, 64)
    assert small > 0
    assert large == pytest.approx(4 * small, rel=0.05)


def test_autograd_overfits_one_batch():
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=3, widths=[8, 16]))
    images = torch.randn(2, 3, 24, 24)
    masks = torch.zeros(2, 24, 24, dtype=torch.long)
    masks[:, 4:14, 4:14] = 1
    masks[:, 15:22, 10:20] = 2
    images[:, 0] += masks.float()  # a learnable cue
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = segmentation_loss(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == masks).float().mean().item()
    assert accuracy >= 0.95
