"""Held-out evaluation: `python -m model.evaluate CHECKPOINT [--data PATH] [--seed S --images N]`.

Reads the synthetic held-out scenes or any layout `--data` takes for training (model/layouts.py).
Prints a per-class IoU table and, as the last line, a JSON object with "miou" and
"pixel_accuracy"; writes the confusion matrix as a PNG (`--confusion`, by default beside the
checkpoint as `<stem>.confusion.png`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from model.checkpoint import CheckpointError, load_checkpoint, read_payload, save_checkpoint
from model.data import DatasetError, SyntheticScenes, make_loader
from model.layouts import FORMATS, open_dataset
from model.metrics import ConfusionMatrix, SegMetrics
from model.transforms import eval_transforms

log = logging.getLogger("deconvseg.evaluate")

HELD_OUT_SEED = 20261125  # never used by the documented training command


@torch.inference_mode()
def confusion(model: nn.Module, loader: DataLoader, num_classes: int,
              device: str | torch.device = "cpu") -> ConfusionMatrix:
    """The confusion matrix of `model` over `loader`'s (image, mask) batches."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes)
    for images, masks in loader:
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        prediction = model(images).argmax(1)
        matrix.update(masks.to(device), prediction)
    model.train(was_training)
    return matrix


def evaluate(
    model: nn.Module, loader: DataLoader, num_classes: int, device: str | torch.device = "cpu"
) -> SegMetrics:
    """mIoU, pixel accuracy and per-class IoU of `model` over `loader`'s (image, mask) batches."""
    return confusion(model, loader, num_classes, device).compute()


def save_confusion_png(matrix: ConfusionMatrix, classes: list[str], path: Path) -> None:
    """The row-normalised confusion matrix (truth × prediction) as a heat map with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = matrix.matrix.double()
    share = (counts / counts.sum(1, keepdim=True).clamp(min=1)).numpy()
    side = 1.2 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted",
           ylabel="truth", title="confusion (share of each true class)")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if len(classes) <= 25:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def iou_table(matrix: ConfusionMatrix, classes: list[str]) -> str:
    """Per class: IoU, and the pixels it holds in truth and in prediction (Markdown)."""
    iou = matrix.per_class_iou().tolist()
    truth, predicted = matrix.matrix.sum(1).tolist(), matrix.matrix.sum(0).tolist()
    lines = ["| class | IoU | truth pixels | predicted pixels |", "|---|---|---|---|"]
    lines += [f"| {name} | {value:.4f} | {t:,} | {p:,} |"
              for name, value, t, p in zip(classes, iou, truth, predicted, strict=True)]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="path to a .pt checkpoint")
    parser.add_argument("--data", default="synthetic",
                        help="'synthetic', or a dataset in any layout training reads")
    parser.add_argument("--data-format", choices=FORMATS, default="auto")
    parser.add_argument("--label-map", default=None, help="label-id masks: the id → class JSON")
    parser.add_argument("--split", default="val", help="VOC / Cityscapes split (default val)")
    parser.add_argument("--confusion", type=Path, default=None,
                        help="confusion-matrix PNG (default: <checkpoint stem>.confusion.png "
                             "beside it)")
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
        dataset: Dataset
        if args.data == "synthetic":
            dataset = SyntheticScenes(args.images, size=args.size, seed=args.seed,
                                      transform=transform)
            source = f"SyntheticScenes(seed={args.seed}, images={args.images}, size={args.size})"
        else:
            opened = open_dataset(args.data, args.data_format, args.split, args.label_map,
                                  transform)
            dataset = opened
            source = f"{args.data} ({len(opened)} images)"
            if opened.classes != ckpt.classes:
                raise DatasetError(
                    f"{args.data}: classes {opened.classes} differ from the checkpoint's "
                    f"{ckpt.classes}"
                )
        loader = make_loader(dataset, args.batch_size, shuffle=False, seed=0,
                             num_workers=args.workers)
        start = time.perf_counter()
        matrix = confusion(ckpt.model, loader, len(ckpt.classes), args.device)
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    metrics = matrix.compute()
    print(f"checkpoint: {args.checkpoint} (sha256 {ckpt.sha256[:12]}…)")
    print(f"data: {source}")
    print(iou_table(matrix, ckpt.classes))
    picture = args.confusion or Path(args.checkpoint).with_name(
        Path(args.checkpoint).stem + ".confusion.png")
    save_confusion_png(matrix, ckpt.classes, picture)
    print(f"confusion matrix: {picture}")
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
