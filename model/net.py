"""DeconvNet: a Conv2d encoder and a ConvTranspose2d decoder with skip connections.

Shapes. Every downsampling conv is Conv2d(k=3, s=2, p=1), which maps a side of n pixels to
ceil(n / 2): both 2m-1 and 2m land on m, and n = 1 stays 1. Its shape inverse is
ConvTranspose2d with the same (k, s, p): out = (m-1)·2 - 2·1 + (3-1) + output_padding + 1
= 2m - 1 + output_padding. `output_padding` exists to choose between the inputs a strided conv
merged (0 → 2m-1, 1 → 2m); we pass `output_size=` (the skip's size) and PyTorch derives it, so
any H×W ≥ 1 comes back exactly.

Checkerboards. With k=3, s=2 the even outputs get one kernel tap and the odd ones two, so the
transposed convs start as channel-wise bilinear upsamplers (kernel [½, 1, ½]⊗[½, 1, ½]), which
sum to one at every output pixel; training moves on from there.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import torch
from torch import nn


@dataclass
class NetConfig:
    in_channels: int = 3
    num_classes: int = 7
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 96, 128])
    convs_per_stage: int = 2

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        if self.in_channels < 1 or self.num_classes < 2:
            raise ValueError("in_channels must be ≥ 1 and num_classes ≥ 2")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError("widths needs at least two positive stage widths")
        if self.convs_per_stage < 1:
            raise ValueError("convs_per_stage must be ≥ 1")


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """Stage i runs at 1/2^i resolution with widths[i] channels; returns every stage's output."""

    def __init__(self, in_channels: int, widths: list[int], convs_per_stage: int) -> None:
        super().__init__()
        stages = []
        prev = in_channels
        for i, w in enumerate(widths):
            layers = [ConvBNReLU(prev, w, stride=1 if i == 0 else 2)]
            layers += [ConvBNReLU(w, w) for _ in range(convs_per_stage - 1)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def bilinear_upsample_weight(in_channels: int, out_channels: int) -> torch.Tensor:
    """(in, out, 3, 3) weights that upsample ×2 bilinearly, input channel i → output i mod out."""
    k1 = torch.tensor([0.5, 1.0, 0.5])
    kernel = torch.outer(k1, k1)
    weight = torch.zeros(in_channels, out_channels, 3, 3)
    scale = out_channels / in_channels  # keep the output's magnitude when several inputs add up
    for i in range(in_channels):
        weight[i, i % out_channels] = kernel * scale
    return weight


class UpBlock(nn.Module):
    """×2 upsampling with ConvTranspose2d to the skip's exact size, concat, then a 3×3 fuse."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(
            in_channels, skip_channels, kernel_size=3, stride=2, padding=1, bias=False
        )
        with torch.no_grad():
            self.up.weight.copy_(bilinear_upsample_weight(in_channels, skip_channels))
        self.up_norm = nn.Sequential(nn.BatchNorm2d(skip_channels), nn.ReLU(inplace=True))
        self.fuse = ConvBNReLU(2 * skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up_norm(self.up(x, output_size=skip.shape[-2:]))  # (B, skip_ch, H_skip, W_skip)
        return self.fuse(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        # Deepest first: widths[i] → widths[i-1] for i = n-1 … 1.
        self.blocks = nn.ModuleList(
            UpBlock(widths[i], widths[i - 1], widths[i - 1]) for i in range(len(widths) - 1, 0, -1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i, block in enumerate(self.blocks):  # indexed, so that TorchScript compiles it
            x = block(x, features[len(features) - 2 - i])
        return x


class DeconvNet(nn.Module):
    """Logits (B, num_classes, H, W) for images (B, in_channels, H, W), any H, W ≥ 1."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.encoder = Encoder(config.in_channels, config.widths, config.convs_per_stage)
        self.decoder = Decoder(config.widths)
        self.head = nn.Conv2d(config.widths[0], config.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError("expected images shaped (B, " + str(self.in_channels)
                             + ", H, W), got " + str(list(x.shape)))
        return self.head(self.decoder(self.encoder(x)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: DeconvNet, height: int = 256, width: int = 256) -> int:
    """Forward FLOPs (multiply and add counted separately) for one image of this size."""
    from torch.utils.flop_counter import FlopCounterMode

    in_channels = model.config.in_channels
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, height, width))
    model.train(was_training)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description="Print DeconvNet's parameter count and FLOPs.")
    parser.add_argument("--size", type=int, default=256, help="square input side in pixels")
    parser.add_argument("--widths", type=int, nargs="+", default=NetConfig().widths)
    args = parser.parse_args()
    config = NetConfig(widths=args.widths)
    model = DeconvNet(config)
    print(f"config: {asdict(config)}")
    print(f"parameters: {count_parameters(model):,}")
    print(f"GFLOPs per {args.size}² image: {count_flops(model, args.size, args.size) / 1e9:.3f}")


if __name__ == "__main__":
    main()
