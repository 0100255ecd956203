"""Held-out evaluation: `python -m model.evaluate CHECKPOINT --seed S --images N`.

Prints per-class IoU and, as the last line, a JSON object with "miou" and "pixel_accuracy".
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from model.checkpoint import CheckpointError, load_checkpoint, read_payload, save_checkpoint
from model.data import DatasetError, FolderDataset, SyntheticScenes, make_loader
from model.metrics import ConfusionMatrix, SegMetrics
from model.transforms import eval_transforms

log = logging.getLogger("deconvseg.evaluate")

HELD_OUT_SEED = 20261125  # never used by the documented training command


@torch.inference_mode()
def evaluate(
    model: nn.Module, loader: DataLoader, num_classes: int, device: str | torch.device = "cpu"
) -> SegMetrics:
    """mIoU, pixel accuracy and per-class IoU of `model` over `loader`'s (image, mask) batches."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    for images, masks in loader:
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        prediction = model(images).argmax(1)
        matrix.update(masks.to(device), prediction)
    model.train(was_training)
    return matrix.compute()


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="path to a .pt checkpoint")
    parser.add_argument("--data", default="synthetic", help="'synthetic' or a dataset folder")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="synthetic split seed")
    parser.add_argument("--images", type=int, default=200, help="synthetic images to generate")
    parser.add_argument("--size", type=int, default=256, help="synthetic image side in pixels")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true",
                        help="also store the result (and this command) in the checkpoint's "
                             "metrics under 'held_out'")
    return parser


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ckpt = load_checkpoint(args.checkpoint, device=args.device)
        transform = eval_transforms(ckpt.mean, ckpt.std)
        dataset: SyntheticScenes | FolderDataset
        if args.data == "synthetic":
            dataset = SyntheticScenes(args.images, size=args.size, seed=args.seed,
                                      transform=transform)
            source = f"SyntheticScenes(seed={args.seed}, images={args.images}, size={args.size})"
        else:
            dataset = FolderDataset(args.data, transform=transform)
            source = f"{args.data} ({len(dataset)} images)"
            if dataset.classes != ckpt.classes:
                raise DatasetError(
                    f"{args.data}: classes {dataset.classes} differ from the checkpoint's "
                    f"{ckpt.classes}"
                )
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loader = make_loader(dataset, args.batch_size, shuffle=False, seed=0, num_workers=args.workers)
    start = time.perf_counter()
    metrics = evaluate(ckpt.model, loader, len(ckpt.classes), args.device)
    seconds = time.perf_counter() - start
    print(f"checkpoint: {args.checkpoint} (sha256 {ckpt.sha256[:12]}…)")
    print(f"data: {source}")
    width = max(len(c) for c in ckpt.classes)
    for name, iou in zip(ckpt.classes, metrics["per_class_iou"], strict=True):
        print(f"  {name:<{width}}  IoU {iou:.4f}")
    result = {
        "miou": round(metrics["miou"], 5),
        "pixel_accuracy": round(metrics["pixel_accuracy"], 5),
        "per_class_iou": dict(zip(ckpt.classes, [round(v, 5) for v in metrics["per_class_iou"]],
                                  strict=True)),
        "images": len(dataset),
        "seconds": round(seconds, 2),
    }
    if args.record:
        payload, _ = read_payload(args.checkpoint)
        command = "python -m model.evaluate " + shlex.join(sys.argv[1:])
        payload["metrics"]["held_out"] = result | {"source": source, "command": command}
        save_checkpoint(args.checkpoint, payload)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
