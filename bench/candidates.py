"""The architecture candidates of issue 15: `python -m bench.candidates CKPT [CKPT …]`.

One row per checkpoint: its architecture options, GFLOPs per 256² image, parameters, the
training command's seconds and images, held-out mIoU (the recorded `metrics.held_out` when
`model.evaluate --record` wrote one, else evaluated here on the default held-out scenes) and
bf16 TorchScript img/s at 256², batch 1, as the service runs it. Prints a Markdown table and,
last, a JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from app.allocator import tune_malloc
from bench.inprocess import segmenter, time_batches
from model.checkpoint import load_checkpoint
from model.data import SyntheticScenes, make_loader
from model.evaluate import HELD_OUT_SEED, evaluate
from model.net import NetConfig, count_flops, count_parameters
from model.transforms import eval_transforms


def architecture(config: NetConfig) -> str:
    """The options that differ from NetConfig's defaults (the first shipped network)."""
    default = NetConfig(num_classes=config.num_classes)
    names = [f.name for f in dataclasses.fields(NetConfig)
             if f.name not in ("in_channels", "num_classes")]
    changed = [f"{n}={getattr(config, n)}" for n in names
               if getattr(config, n) != getattr(default, n) or n == "widths"]
    return ", ".join(changed)


def held_out_miou(path: str, images: int) -> float:
    ckpt = load_checkpoint(path)
    recorded = ckpt.metrics.get("held_out", {})
    if recorded.get("images") == images and "miou" in recorded:
        return float(recorded["miou"])
    data = SyntheticScenes(images, size=256, seed=HELD_OUT_SEED,
                           transform=eval_transforms(ckpt.mean, ckpt.std))
    loader = make_loader(data, 8, shuffle=False, seed=0)
    return float(evaluate(ckpt.model, loader, len(ckpt.classes))["miou"])


def candidate_row(path: str, images: int, seconds: float) -> dict:
    ckpt = load_checkpoint(path)
    speed = time_batches(segmenter(path, "bf16", "torchscript"), 256, 1, seconds)
    training = ckpt.training
    return {"checkpoint": Path(path).name, "architecture": architecture(ckpt.config),
            "gflops": round(count_flops(ckpt.model) / 1e9, 3),
            "parameters": count_parameters(ckpt.model),
            "train_seconds": training.get("seconds"), "command": training.get("command"),
            "held_out_miou": round(held_out_miou(path, images), 4),
            "bf16_torchscript_img_s": speed["images_per_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--images", type=int, default=200, help="held-out scenes (256²)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per model")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tune_malloc()  # as `python -m app` does
    rows = [candidate_row(p, args.images, args.seconds) for p in args.checkpoints]
    print("| checkpoint | architecture | GFLOPs | params | train s | held-out mIoU | img/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['checkpoint']} | {r['architecture']} | {r['gflops']:.2f} | "
              f"{r['parameters']:,} | {r['train_seconds']} | {r['held_out_miou']:.3f} | "
              f"{r['bf16_torchscript_img_s']:.1f} |")
    print(json.dumps({"threads": args.threads, "results": rows}))


if __name__ == "__main__":
    main()
