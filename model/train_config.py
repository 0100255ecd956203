"""The training run's settings: `TrainConfig` (saved in each checkpoint) and the command line
that fills it (`python -m model.train --help`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from model.layouts import FORMATS
from model.net import NetConfig


@dataclasses.dataclass
class TrainConfig:
    """Everything a run was asked to do: the CLI's flags, saved in the checkpoint."""

    data: str = "synthetic"
    data_format: str = "auto"
    label_map: str | None = None
    val_data: str | None = None
    epochs: int = 20
    epoch_size: int = 4096
    val_images: int = 128
    val_size: int = 256
    crop_size: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    clip_grad_norm: float = 0.0
    dice: float = 0.0
    warmup_steps: int = 200
    widths: list[int] = dataclasses.field(default_factory=lambda: NetConfig().widths)
    net: dict[str, Any] = dataclasses.field(default_factory=dict)
    cutmix: float = 0.0
    mixup: float = 0.0
    mix_alpha: float = 1.0
    scale_jitter: tuple[float, float] = (0.8, 1.25)
    color_jitter: float = 0.0
    bf16: bool = False
    workers: int = 1
    threads: int = 0
    device: str = "cpu"
    seed: int = 0
    out: str = "weights/model.pt"
    resume: str | None = None
    stop_after: int | None = None
    no_progress: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
        values["scale_jitter"] = tuple(values["scale_jitter"])
        values["net"] = dict(values["net"])
        return cls(**values)

    def net_config(self, num_classes: int) -> NetConfig:
        return NetConfig(num_classes=num_classes, widths=self.widths, **self.net)


def net_option(text: str) -> tuple[str, Any]:
    """`--net KEY=VALUE`: a NetConfig field and its value, read as JSON (`true`, `2`, `[8, 16]`)
    or else as a string."""
    key, sep, value = text.partition("=")
    names = {f.name for f in dataclasses.fields(NetConfig)} - {"num_classes", "in_channels"}
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE with KEY one of "
                                         f"{', '.join(sorted(names))}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(description="Train DeconvNet.")
    p.add_argument("--data", default=d.data,
                   help="'synthetic', or a dataset: our folder, COCO, VOC or Cityscapes")
    p.add_argument("--data-format", choices=FORMATS, default=d.data_format)
    p.add_argument("--label-map", default=None,
                   help="label-id masks (Cityscapes): JSON of class names and id → train id")
    p.add_argument("--val-data", default=None,
                   help="validation dataset (default: VOC/Cityscapes' val split, else 10%%)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--epoch-size", type=int, default=d.epoch_size,
                   help="synthetic images per epoch")
    p.add_argument("--val-images", type=int, default=d.val_images,
                   help="synthetic validation images")
    p.add_argument("--val-size", type=int, default=d.val_size,
                   help="synthetic validation image side")
    p.add_argument("--crop-size", type=int, default=d.crop_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="AdamW decay, on conv and linear weights only (not norms or biases)")
    p.add_argument("--clip-grad-norm", type=float, default=d.clip_grad_norm,
                   help="clip the gradients' global norm to this (0: off)")
    p.add_argument("--dice", type=float, default=d.dice,
                   help="weight of a soft Dice term beside cross-entropy (0: off)")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--widths", type=int, nargs="+", default=d.widths)
    p.add_argument("--net", type=net_option, nargs="*", default=[], metavar="KEY=VALUE",
                   help="other NetConfig fields, e.g. convs_per_stage=1")
    p.add_argument("--cutmix", type=float, default=d.cutmix,
                   help="probability of CutMix per batch")
    p.add_argument("--mixup", type=float, default=d.mixup, help="probability of MixUp per batch")
    p.add_argument("--mix-alpha", type=float, default=d.mix_alpha,
                   help="Beta(α, α) for CutMix/MixUp")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=d.scale_jitter)
    p.add_argument("--color-jitter", type=float, default=d.color_jitter)
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast for forward/backward (weights and optimizer stay fp32)")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch intra-op threads (0: default)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=d.out)
    p.add_argument("--resume", default=None, help="a <out>.state.pt to continue from")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs in total (resume later; the schedule "
                        "still spans --epochs)")
    p.add_argument("--no-progress", action="store_true")
    return p
