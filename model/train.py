"""Training: `python -m model.train --data synthetic|PATH --epochs E --out weights/model.pt`.

Writes the model checkpoint (`--out`), a resumable training state beside it (`<out>.state.pt`,
never shipped) and a training-curves PNG (`<out>.curves.png`). `--resume STATE` continues exactly
where that state left off. Under `torchrun` it trains with DistributedDataParallel
(model/distributed.py). The run's `TrainConfig` is saved in the checkpoint
(`training["config"]`).

`--data` reads our folder layout, COCO, Pascal VOC and Cityscapes-style label ids
(model/layouts.py), detected or named with `--data-format`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from model import distributed
from model.checkpoint import checkpoint_dict, read_payload, save_checkpoint
from model.classes import default_palette
from model.data import (
    DEFAULT_OBJECT_SCALE,
    DatasetError,
    FolderDataset,
    Sample,
    SyntheticScenes,
    make_loader,
)
from model.evaluate import confusion
from model.layouts import LabelledImages, detect, open_dataset
from model.metrics import SegMetrics
from model.net import DeconvNet
from model.train_config import TrainConfig, get_args_parser
from model.transforms import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    SegCutMix,
    SegMixUp,
    eval_transforms,
    segmentation_loss,
    train_transforms,
)

log = logging.getLogger("deconvseg.train")

# The datasets training handles; each is a torch Dataset of `Sample`s with a length.
SegDataset: TypeAlias = SyntheticScenes | FolderDataset | LabelledImages | Subset[Sample]


# --- data -------------------------------------------------------------------------------------


def build_datasets(cfg: TrainConfig) -> tuple[SegDataset, SegDataset, list[str]]:
    train: SegDataset
    val: SegDataset
    train_tf = train_transforms(cfg.crop_size, DEFAULT_MEAN, DEFAULT_STD, cfg.scale_jitter,
                                cfg.color_jitter)
    val_tf = eval_transforms(DEFAULT_MEAN, DEFAULT_STD)
    if cfg.data == "synthetic":
        train = SyntheticScenes(cfg.epochs * cfg.epoch_size, size=cfg.crop_size, seed=cfg.seed,
                                transform=train_tf)
        val = SyntheticScenes(cfg.val_images, size=cfg.val_size, seed=cfg.seed + 1,
                              transform=val_tf)
        return train, val, list(SyntheticScenes.classes)

    def opened(path: str, split: str, transform: Any) -> FolderDataset | LabelledImages:
        return open_dataset(path, cfg.data_format, split, cfg.label_map, transform)

    train_full = opened(cfg.data, "train", train_tf)
    kind = detect(Path(cfg.data)) if cfg.data_format == "auto" else cfg.data_format
    if cfg.val_data or kind in ("voc", "cityscapes"):  # layouts with a val split of their own
        val_full = opened(cfg.val_data or cfg.data, "val", val_tf)
        if val_full.classes != train_full.classes:
            raise DatasetError(f"{cfg.val_data or cfg.data}: validation classes "
                               f"{val_full.classes} differ from training's "
                               f"{train_full.classes}")
        return train_full, val_full, train_full.classes
    n = len(train_full)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    n_val = max(1, n // 10) if n > 1 else 0
    val_part = opened(cfg.data, "val", val_tf)
    return (Subset(train_full, order[n_val:] or order), Subset(val_part, order[:n_val] or order),
            train_full.classes)


def epoch_subset(train: SegDataset, cfg: TrainConfig, epoch: int) -> SegDataset:
    """Synthetic data: epoch e sees its own fresh block of scenes."""
    if cfg.data == "synthetic":
        return Subset(train, range(epoch * cfg.epoch_size, (epoch + 1) * cfg.epoch_size))
    return train


# --- optimisation -----------------------------------------------------------------------------


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on conv and linear weights only (`dim() >= 2`), not on biases or
    BatchNorm scales and shifts: decaying those only pulls the normalisation towards zero
    (nanoGPT's `configure_optimizers` makes the same split)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def warmup_cosine(warmup: int, total: int, floor: float = 0.01):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# --- loop -------------------------------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    mixers: list[tuple[float, Any]],
    cfg: TrainConfig,
    device: str,
    progress: bool,
    epoch: int,
) -> float:
    model.train()
    total, count = 0.0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not progress, leave=False, mininterval=2)
    for images, masks in bar:
        images, masks = images.to(device), masks.to(device)
        target: torch.Tensor = masks
        for prob, mixer in mixers:
            if prob > 0 and torch.rand(1).item() < prob:
                images, target, _ = mixer(images, masks)
                break
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss = segmentation_loss(logits.float(), target, cfg.dice)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        total += loss.item()
        count += 1
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return total / max(count, 1)


def validate(model: nn.Module, val_set: SegDataset, num_classes: int, device: str, rank: int,
             world: int) -> SegMetrics:
    """Each rank scores its shard of the validation set; the confusion matrices are summed."""
    loader = make_loader(distributed.shard(val_set, rank, world), 8, shuffle=False, seed=0)
    matrix = confusion(model, loader, num_classes, device)
    return distributed.reduce_confusion(matrix, world, device).compute()


def save_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss", title="loss")
    ax2.plot(epochs, [h["miou"] for h in history], marker="o", label="val mIoU")
    ax2.plot(epochs, [h["pixel_accuracy"] for h in history], marker="s", label="val pixel acc")
    ax2.set(xlabel="epoch", ylim=(0, 1), title="validation")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".state.pt")


@dataclasses.dataclass
class Run:
    """What the loop carries from epoch to epoch (and a resume restores)."""

    model: DeconvNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    classes: list[str]
    start_epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def start(cfg: TrainConfig, classes: list[str], steps_per_epoch: int, device: str,
          rank: int) -> Run:
    model = DeconvNet(cfg.net_config(len(classes))).to(device).to(
        memory_format=torch.channels_last)
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay)
    total_steps = max(steps_per_epoch * cfg.epochs, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(cfg.warmup_steps, total_steps // 5 + 1), total_steps))
    run = Run(model, optimizer, scheduler, classes)
    if cfg.resume:
        state, _ = read_payload(cfg.resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        run.start_epoch, run.history, run.seconds = (state["epoch"] + 1, state["history"],
                                                     state["seconds"])
        if distributed.is_main(rank):
            log.info("resumed from %s at epoch %d", cfg.resume, run.start_epoch)
    return run


def save_epoch(run: Run, cfg: TrainConfig, epoch: int, metrics: SegMetrics, world: int,
               rngs: list[Any]) -> None:
    """The checkpoint, the resumable state and the curves after an epoch (rank 0)."""
    classes, out = run.classes, Path(cfg.out)
    ious = " ".join(f"{c}={v:.3f}" for c, v in zip(classes, metrics["per_class_iou"], strict=True))
    log.info("epoch %d/%d loss %.4f val mIoU %.4f pixel acc %.4f (%.0fs) | %s", epoch + 1,
             cfg.epochs, run.history[-1]["loss"], metrics["miou"], metrics["pixel_accuracy"],
             run.seconds, ious)
    training = {"command": "python -m model.train " + shlex.join(sys.argv[1:]),
                "config": dataclasses.asdict(cfg), "epochs_done": epoch + 1,
                "seconds": round(run.seconds, 1), "world_size": world, "history": run.history}
    save_checkpoint(out, checkpoint_dict(
        run.model, classes, default_palette(len(classes)), DEFAULT_MEAN, DEFAULT_STD,
        train_size=cfg.crop_size,
        object_scale=list(DEFAULT_OBJECT_SCALE) if cfg.data == "synthetic" else [],
        metrics={"val_miou": metrics["miou"], "val_pixel_accuracy": metrics["pixel_accuracy"],
                 "val_per_class_iou": dict(zip(classes, metrics["per_class_iou"],
                                               strict=True))},
        training=training))
    save_checkpoint(state_path(out), {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "epoch": epoch, "rng": rngs,
        "history": run.history, "seconds": run.seconds, "config": dataclasses.asdict(cfg)})
    save_curves(run.history, out.with_name(out.stem + ".curves.png"))


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = TrainConfig.from_args(args)
    rank, world = distributed.init(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + rank)
    device = distributed.local_device(cfg.device, world)
    try:
        train_set, val_set, classes = build_datasets(cfg)
        steps = (cfg.epoch_size if cfg.data == "synthetic" else len(train_set)) // (
            cfg.batch_size * world)
        run = start(cfg, classes, steps, device, rank)
        net = nn.parallel.DistributedDataParallel(run.model) if world > 1 else run.model
        mixers = [(cfg.cutmix, SegCutMix(len(classes), cfg.mix_alpha)),
                  (cfg.mixup, SegMixUp(len(classes), cfg.mix_alpha))]
        progress = distributed.is_main(rank) and not cfg.no_progress
        for epoch in range(run.start_epoch, min(cfg.epochs, cfg.stop_after or cfg.epochs)):
            t0 = time.perf_counter()
            subset = epoch_subset(train_set, cfg, epoch)
            sampler: DistributedSampler[Sample] | None = None
            if world > 1:
                sampler = DistributedSampler(subset, num_replicas=world, rank=rank, shuffle=True,
                                             seed=cfg.seed, drop_last=True)
                sampler.set_epoch(epoch)
            loader = make_loader(subset, cfg.batch_size, shuffle=True,
                                 seed=cfg.seed * 1000 + epoch, num_workers=cfg.workers,
                                 sampler=sampler)
            loss = train_one_epoch(net, loader, run.optimizer, run.scheduler, mixers, cfg, device,
                                   progress, epoch)
            run.seconds += time.perf_counter() - t0
            metrics = validate(run.model, val_set, len(classes), device, rank, world)
            run.history.append({"epoch": epoch, "loss": distributed.mean(loss, world, device),
                                "miou": metrics["miou"],
                                "pixel_accuracy": metrics["pixel_accuracy"],
                                "seconds": run.seconds})
            rngs = distributed.rng_states(world)
            if distributed.is_main(rank):
                save_epoch(run, cfg, epoch, metrics, world, rngs)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    distributed.finish(world)
    if distributed.is_main(rank):
        log.info("wrote %s", cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
