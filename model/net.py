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

Lean options (all default to the original network, so its checkpoints load unchanged):
`encoder_conv="separable"` makes every encoder 3×3 conv but the stem (RGB → widths[0]) a
depthwise 3×3 + pointwise 1×1 pair (MobileNet's ~k²× saving); `decoder_conv` does the same for
the decoder's fuse convs; `fusion="add"` adds the upsampled map to the skip instead of
concatenating them, which halves the fuse conv's input; `up_conv="grouped"` splits each
transposed conv into gcd(in, out) groups. `convs_per_stage` may name each stage's depth.
`stem_stride=2` runs the whole encoder–decoder from half resolution: the stem is a stride-2
conv, and a last `ConvTranspose2d(k=3, s=2, p=1, output_size=input)` (+BN+ReLU) brings the
features back to the input's H×W for the 1×1 head. The full-resolution stage, the most
expensive per channel, then costs one transposed conv and the head; each output pixel's phase
(even/odd row and column) still gets its own learned taps, as in a pixel shuffle. With
`full_skip=True` that last step is an `UpBlock` like the others, whose skip is one 3×3 conv of
the input at full resolution (added, then one fuse conv): the image's own edges for the
boundaries, at a fraction of a full-resolution stage.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

CONVS = ("dense", "separable")
FUSIONS = ("concat", "add")
UP_CONVS = ("dense", "grouped")


@dataclass
class NetConfig:
    in_channels: int = 3
    num_classes: int = 7
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 96, 128])
    convs_per_stage: int | list[int] = 2  # one depth for every stage, or one per stage
    encoder_conv: str = "dense"  # dense | separable (all encoder convs but the stem)
    decoder_conv: str = "dense"  # dense | separable (the fuse convs)
    fusion: str = "concat"  # concat | add (upsampled map and skip)
    up_conv: str = "dense"  # dense | grouped (gcd(in, out) groups)
    stem_stride: int = 1  # 1 | 2 (the network runs from half resolution; see the docstring)
    full_skip: bool = False  # stem_stride=2: a full-resolution skip from the input

    def __post_init__(self) -> None:
        self.widths = [int(w) for w in self.widths]
        if self.in_channels < 1 or self.num_classes < 2:
            raise ValueError("in_channels must be ≥ 1 and num_classes ≥ 2")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError("widths needs at least two positive stage widths")
        if isinstance(self.convs_per_stage, list | tuple):
            self.convs_per_stage = [int(n) for n in self.convs_per_stage]
            if len(self.convs_per_stage) != len(self.widths):
                raise ValueError(f"convs_per_stage names {len(self.convs_per_stage)} stages; "
                                 f"widths has {len(self.widths)}")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride={self.stem_stride!r}; use 1 or 2")
        if self.full_skip and self.stem_stride != 2:
            raise ValueError("full_skip needs stem_stride=2 (at stride 1 the encoder's first "
                             "stage is the full-resolution skip)")
        if min(self.stage_depths()) < 1:
            raise ValueError("convs_per_stage must be ≥ 1")
        for name, allowed in (("encoder_conv", CONVS), ("decoder_conv", CONVS),
                              ("fusion", FUSIONS), ("up_conv", UP_CONVS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; use one of {', '.join(allowed)}")

    def stage_depths(self) -> list[int]:
        """Convs in each encoder stage."""
        if isinstance(self.convs_per_stage, list):
            return list(self.convs_per_stage)
        return [int(self.convs_per_stage)] * len(self.widths)


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise 3×3 (+BN+ReLU), then pointwise 1×1 (+BN+ReLU): a 3×3 conv's receptive field
    at (9 + out) / (9 · out) of its multiply-adds."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels,
                      bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def conv_block(kind: str, in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    if kind == "separable":
        return SeparableConvBNReLU(in_channels, out_channels, stride)
    return ConvBNReLU(in_channels, out_channels, stride)


class Encoder(nn.Module):
    """Stage i runs at 1/2^i resolution with widths[i] channels; returns every stage's output."""

    def __init__(self, in_channels: int, widths: list[int], depths: list[int],
                 conv: str = "dense", stem_stride: int = 1) -> None:
        super().__init__()
        stages = []
        prev = in_channels
        for i, (w, depth) in enumerate(zip(widths, depths, strict=True)):
            first = "dense" if i == 0 else conv  # the stem sees only RGB: depthwise gains nothing
            layers = [conv_block(first, prev, w, stride=stem_stride if i == 0 else 2)]
            layers += [conv_block(conv, w, w) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def bilinear_upsample_weight(in_channels: int, out_channels: int, groups: int = 1) -> torch.Tensor:
    """(in, out/groups, 3, 3) weights that upsample ×2 bilinearly: within each group, input
    channel i → output i mod (out/groups)."""
    k1 = torch.tensor([0.5, 1.0, 0.5])
    kernel = torch.outer(k1, k1)
    in_per, out_per = in_channels // groups, out_channels // groups
    weight = torch.zeros(in_channels, out_per, 3, 3)
    scale = out_per / in_per  # keep the output's magnitude when several inputs add up
    for i in range(in_channels):
        weight[i, (i % in_per) % out_per] = kernel * scale
    return weight


def bilinear_upsampler(in_channels: int, out_channels: int, groups: int = 1
                       ) -> nn.ConvTranspose2d:
    """The decoder's ×2: ConvTranspose2d(k=3, s=2, p=1), the shape inverse of the encoder's
    stride-2 conv (call it with `output_size=`), starting as a bilinear upsampler."""
    up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1,
                            groups=groups, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_upsample_weight(in_channels, out_channels, groups))
    return up


class UpBlock(nn.Module):
    """×2 upsampling with ConvTranspose2d to the skip's exact size, concat (or add) the skip,
    then a 3×3 fuse."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 conv: str = "dense", fusion: str = "concat", up_conv: str = "dense") -> None:
        super().__init__()
        groups = math.gcd(in_channels, skip_channels) if up_conv == "grouped" else 1
        self.up = bilinear_upsampler(in_channels, skip_channels, groups)
        self.up_norm = nn.Sequential(nn.BatchNorm2d(skip_channels), nn.ReLU(inplace=True))
        self.add = fusion == "add"
        fused = skip_channels if self.add else 2 * skip_channels
        self.fuse = conv_block(conv, fused, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up_norm(self.up(x, output_size=skip.shape[-2:]))  # (B, skip_ch, H_skip, W_skip)
        if self.add:
            return self.fuse(x + skip)
        return self.fuse(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    def __init__(self, widths: list[int], conv: str = "dense", fusion: str = "concat",
                 up_conv: str = "dense") -> None:
        super().__init__()
        # Deepest first: widths[i] → widths[i-1] for i = n-1 … 1.
        self.blocks = nn.ModuleList(
            UpBlock(widths[i], widths[i - 1], widths[i - 1], conv, fusion, up_conv)
            for i in range(len(widths) - 1, 0, -1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for i, block in enumerate(self.blocks):  # indexed, so that TorchScript compiles it
            x = block(x, features[len(features) - 2 - i])
        return x


class FullResolutionUp(nn.Module):
    """The last ×2 of a `stem_stride=2` network: ConvTranspose2d (bilinear-initialised) to the
    input's exact H×W, then BN+ReLU; there is no skip at full resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = bilinear_upsampler(channels, channels)
        self.norm = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.norm(self.up(x, output_size=image.shape[-2:]))


class FullResolutionSkip(nn.Module):
    """The last ×2 of a `stem_stride=2, full_skip=True` network: an `UpBlock` (add fusion)
    whose skip is a 3×3 conv of the input image at full resolution."""

    def __init__(self, in_channels: int, channels: int, conv: str = "dense",
                 up_conv: str = "dense") -> None:
        super().__init__()
        self.stem = ConvBNReLU(in_channels, channels)
        self.block = UpBlock(channels, channels, channels, conv, "add", up_conv)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.block(x, self.stem(image))


class DeconvNet(nn.Module):
    """Logits (B, num_classes, H, W) for images (B, in_channels, H, W), any H, W ≥ 1."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.in_channels = config.in_channels
        self.encoder = Encoder(config.in_channels, config.widths, config.stage_depths(),
                               config.encoder_conv, config.stem_stride)
        self.decoder = Decoder(config.widths, config.decoder_conv, config.fusion, config.up_conv)
        self.full: FullResolutionUp | FullResolutionSkip | None = None
        if config.full_skip:
            self.full = FullResolutionSkip(config.in_channels, config.widths[0],
                                           config.decoder_conv, config.up_conv)
        elif config.stem_stride == 2:
            self.full = FullResolutionUp(config.widths[0])
        self.head = nn.Conv2d(config.widths[0], config.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError("expected images shaped (B, " + str(self.in_channels)
                             + ", H, W), got " + str(list(x.shape)))
        features = self.decoder(self.encoder(x))
        if self.full is not None:
            features = self.full(features, x)
        return self.head(features)


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


def add_architecture_args(parser: argparse.ArgumentParser) -> None:
    """NetConfig's architecture fields as command-line options (model.net and model.train)."""
    default = NetConfig()
    parser.add_argument("--widths", type=int, nargs="+", default=default.widths)
    parser.add_argument("--convs-per-stage", type=int, nargs="+", default=[default.convs_per_stage],
                        help="one depth for every stage, or one per stage")
    parser.add_argument("--encoder-conv", choices=CONVS, default=default.encoder_conv)
    parser.add_argument("--decoder-conv", choices=CONVS, default=default.decoder_conv)
    parser.add_argument("--fusion", choices=FUSIONS, default=default.fusion)
    parser.add_argument("--up-conv", choices=UP_CONVS, default=default.up_conv)
    parser.add_argument("--stem-stride", type=int, choices=(1, 2), default=default.stem_stride)
    parser.add_argument("--full-skip", action="store_true",
                        help="with --stem-stride 2: a full-resolution skip from the input")


def architecture_options(args: argparse.Namespace) -> dict[str, Any]:
    """NetConfig keyword arguments from `add_architecture_args`' options."""
    depths = args.convs_per_stage
    return {"widths": args.widths, "convs_per_stage": depths[0] if len(depths) == 1 else depths,
            "encoder_conv": args.encoder_conv, "decoder_conv": args.decoder_conv,
            "fusion": args.fusion, "up_conv": args.up_conv, "stem_stride": args.stem_stride,
            "full_skip": args.full_skip}


def main() -> None:
    parser = argparse.ArgumentParser(description="Print DeconvNet's parameter count and FLOPs.")
    parser.add_argument("--size", type=int, default=256, help="square input side in pixels")
    add_architecture_args(parser)
    args = parser.parse_args()
    config = NetConfig(**architecture_options(args))
    model = DeconvNet(config)
    print(f"config: {asdict(config)}")
    print(f"parameters: {count_parameters(model):,}")
    print(f"GFLOPs per {args.size}² image: {count_flops(model, args.size, args.size) / 1e9:.3f}")


if __name__ == "__main__":
    main()
