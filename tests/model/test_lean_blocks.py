"""The lean options of NetConfig: any H×W, FLOPs counted per group, TorchScript and ONNX."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from app.inference import freeze_torchscript
from model.checkpoint import checkpoint_dict, load_checkpoint, save_checkpoint
from model.classes import default_palette
from model.export import export_onnx
from model.net import (
    DeconvNet,
    NetConfig,
    SeparableConvBNReLU,
    bilinear_upsample_weight,
    count_flops,
    count_parameters,
)

LEAN = NetConfig(num_classes=3, widths=[4, 8, 12], convs_per_stage=[1, 2, 2],
                 encoder_conv="separable", decoder_conv="separable", fusion="add",
                 up_conv="grouped")
LEAN_CONCAT = NetConfig(num_classes=3, widths=[6, 8, 12], encoder_conv="separable",
                        decoder_conv="separable", up_conv="grouped")
HALF = NetConfig(num_classes=3, widths=[4, 8, 12], stem_stride=2)
HALF_SKIP = NetConfig(num_classes=3, widths=[4, 8, 12], stem_stride=2, full_skip=True)


def trained_mode_model(config: NetConfig) -> DeconvNet:
    """Random weights and non-trivial BatchNorm statistics (one training-mode forward)."""
    torch.manual_seed(0)
    model = DeconvNet(config)
    model(torch.randn(2, 3, 16, 16))
    return model.eval()


def conv_flops_by_hand(model: nn.Module, height: int, width: int) -> int:
    """2 · multiply-adds of every conv, from its groups, kernel and the shapes it sees."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters its kernel
            per_group = module.out_channels // module.groups
            total += 2 * inputs[0][0].numel() * per_group * kh * kw
        else:  # every output pixel gathers (in / groups) · k² inputs
            per_group = module.in_channels // module.groups
            total += 2 * output[0].numel() * per_group * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("config", [LEAN, LEAN_CONCAT, HALF, HALF_SKIP],
                         ids=["add", "concat", "half", "half+skip"])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (7, 600), (33, 17), (65, 65)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
def test_lean_output_size_equals_input_size(config, size):
    model = DeconvNet(config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, config.num_classes, *size)


def test_count_flops_counts_depthwise_and_grouped_convs_by_their_groups():
    model = DeconvNet(LEAN)
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
               and m.groups > 1]
    assert any(isinstance(m, nn.ConvTranspose2d) for m in grouped)
    assert any(isinstance(m, nn.Conv2d) and m.groups == m.in_channels for m in grouped)
    assert count_flops(model, 40, 24) == conv_flops_by_hand(model, 40, 24)


def test_separable_convs_cost_a_fraction_of_dense_ones():
    dense = NetConfig(widths=[16, 32, 64])
    lean = NetConfig(widths=[16, 32, 64], encoder_conv="separable", decoder_conv="separable")
    assert count_flops(DeconvNet(lean), 64, 64) < count_flops(DeconvNet(dense), 64, 64) / 3


def test_every_encoder_conv_but_the_stem_is_separable():
    model = DeconvNet(LEAN)
    blocks = [b for stage in model.encoder.stages for b in stage]
    assert not isinstance(blocks[0], SeparableConvBNReLU)
    assert all(isinstance(b, SeparableConvBNReLU) for b in blocks[1:])
    assert len(blocks) == sum(LEAN.stage_depths())


def test_half_resolution_stem_runs_the_trunk_at_half_size_and_quarters_its_flops():
    seen = []
    full, half = DeconvNet(NetConfig(widths=[16, 32, 64])), DeconvNet(
        NetConfig(widths=[16, 32, 64], stem_stride=2))
    half.encoder.stages[0].register_forward_hook(lambda m, i, out: seen.append(out.shape))
    with torch.no_grad():
        assert half.eval()(torch.zeros(1, 3, 64, 48)).shape[-2:] == (64, 48)
    assert seen == [(1, 16, 32, 24)]
    assert count_flops(half, 64, 64) == conv_flops_by_hand(half, 64, 64)
    assert count_flops(half, 64, 64) < count_flops(full, 64, 64) / 3


def test_half_resolution_up_starts_as_bilinear_upsampler():
    model = DeconvNet(HALF)
    out = model.full.up(torch.ones(1, 4, 5, 5), output_size=(10, 10))
    interior = out[..., :-1, :-1]  # the last row/column sees only half a kernel
    torch.testing.assert_close(interior, torch.ones_like(interior))


def test_stem_stride_is_one_or_two():
    with pytest.raises(ValueError, match="stem_stride=4; use 1 or 2"):
        NetConfig(stem_stride=4)


def test_a_full_resolution_skip_needs_the_half_resolution_stem():
    with pytest.raises(ValueError, match="full_skip needs stem_stride=2"):
        NetConfig(full_skip=True)


def test_the_full_resolution_skip_sees_the_input_at_full_size():
    seen = []
    model = DeconvNet(HALF_SKIP).eval()
    model.full.stem.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 33, 20)).shape == (1, 3, 33, 20)
    assert seen == [(1, 4, 33, 20)]
    assert count_flops(model, 33, 20) == conv_flops_by_hand(model, 33, 20)


def test_grouped_transposed_conv_starts_as_bilinear_upsampler():
    up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, groups=4, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_upsample_weight(8, 4, groups=4))
        out = up(torch.ones(1, 8, 5, 5), output_size=(10, 10))
    interior = out[..., :-1, :-1]  # the last row/column sees only half a kernel
    torch.testing.assert_close(interior, torch.ones_like(interior))


def test_a_config_saved_before_the_lean_options_builds_the_original_network():
    old = {"in_channels": 3, "num_classes": 7, "widths": [16, 32, 64, 96, 128],
           "convs_per_stage": 2}
    model = DeconvNet(NetConfig(**old))
    assert NetConfig(**old) == NetConfig()
    assert count_parameters(model) == 922_023  # the first model, shipped until 2026-12-06
    assert count_flops(model) == 4_318_035_968


@pytest.mark.parametrize(("field", "value"), [
    ("encoder_conv", "mobile"), ("fusion", "sum"), ("decoder_conv", "grouped"),
    ("up_conv", "bilinear")])
def test_unknown_block_names_are_refused_with_the_choices(field, value):
    with pytest.raises(ValueError, match=f"{field}='{value}'; use one of"):
        NetConfig(**{field: value})


def test_per_stage_depths_must_name_every_stage():
    with pytest.raises(ValueError, match="names 2 stages; widths has 3"):
        NetConfig(widths=[4, 8, 8], convs_per_stage=[1, 2])


def test_lean_checkpoint_round_trips_its_config(tmp_path):
    model = trained_mode_model(LEAN)
    payload = checkpoint_dict(model, ["background", "a", "b"], default_palette(3), [0.5] * 3,
                              [0.25] * 3, train_size=64, object_scale=[])
    save_checkpoint(tmp_path / "lean.pt", payload)
    ckpt = load_checkpoint(tmp_path / "lean.pt")
    assert ckpt.config == LEAN
    x = torch.randn(1, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))


@pytest.mark.parametrize("config", [LEAN, HALF, HALF_SKIP], ids=["lean", "half", "half+skip"])
@pytest.mark.parametrize("size", [(1, 1), (9, 31), (64, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_frozen_torchscript_of_a_lean_model_equals_eager(config, size):
    model = trained_mode_model(config)
    frozen = freeze_torchscript(model, torch.float32)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("config", [LEAN, HALF, HALF_SKIP], ids=["lean", "half", "half+skip"])
def test_onnx_export_of_a_lean_model_serves_any_size(tmp_path, config):
    model = trained_mode_model(config)
    payload = checkpoint_dict(model, ["background", "a", "b"], default_palette(3), [0.5] * 3,
                              [0.25] * 3, train_size=64, object_scale=[])
    save_checkpoint(tmp_path / "lean.pt", payload)
    proto = export_onnx(load_checkpoint(tmp_path / "lean.pt"))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for height, width in [(1, 1), (7, 60), (33, 18)]:
        image = torch.randn(1, 3, height, width)
        with torch.no_grad():
            reference = model(image)
        logits, mask = session.run(["logits", "mask"], {"image": image.numpy()})
        np.testing.assert_allclose(logits, reference.numpy(), atol=1e-4)
        assert np.array_equal(mask, reference.argmax(1).numpy())
