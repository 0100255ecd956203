"""Training: `python -m model.train --data synthetic|PATH --epochs E --out weights/model.pt`.

Writes the model checkpoint (`--out`), a resumable training state beside it (`<out>.state.pt`,
never shipped) and a training-curves PNG (`<out>.curves.png`). `--resume STATE` continues exactly
where that state left off. Under `torchrun` it trains with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, TypeAlias

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

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
from model.evaluate import evaluate
from model.net import DeconvNet, NetConfig
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
SegDataset: TypeAlias = SyntheticScenes | FolderDataset | Subset[Sample]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train DeconvNet.")
    p.add_argument("--data", default="synthetic", help="'synthetic' or a dataset folder")
    p.add_argument("--val-data", default=None, help="validation folder (default: 10%% split)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--epoch-size", type=int, default=4096, help="synthetic images per epoch")
    p.add_argument("--val-images", type=int, default=128, help="synthetic validation images")
    p.add_argument("--val-size", type=int, default=256, help="synthetic validation image side")
    p.add_argument("--crop-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--widths", type=int, nargs="+", default=NetConfig().widths)
    p.add_argument("--cutmix", type=float, default=0.0, help="probability of CutMix per batch")
    p.add_argument("--mixup", type=float, default=0.0, help="probability of MixUp per batch")
    p.add_argument("--mix-alpha", type=float, default=1.0, help="Beta(α, α) for CutMix/MixUp")
    p.add_argument("--scale-jitter", type=float, nargs=2, default=(0.8, 1.25))
    p.add_argument("--color-jitter", type=float, default=0.0)
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast for forward/backward (weights and optimizer stay fp32)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="weights/model.pt")
    p.add_argument("--resume", default=None, help="a <out>.state.pt to continue from")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs in total (resume later; the schedule "
                        "still spans --epochs)")
    p.add_argument("--no-progress", action="store_true")
    return p


# --- distributed helpers ----------------------------------------------------------------------


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def is_main(rank: int) -> bool:
    return rank == 0


# --- data -------------------------------------------------------------------------------------


def build_datasets(args: argparse.Namespace) -> tuple[SegDataset, SegDataset, list[str]]:
    train: SegDataset
    val: SegDataset
    train_tf = train_transforms(args.crop_size, DEFAULT_MEAN, DEFAULT_STD,
                                tuple(args.scale_jitter), args.color_jitter)
    val_tf = eval_transforms(DEFAULT_MEAN, DEFAULT_STD)
    if args.data == "synthetic":
        train = SyntheticScenes(args.epochs * args.epoch_size, size=args.crop_size,
                                seed=args.seed, transform=train_tf)
        val = SyntheticScenes(args.val_images, size=args.val_size, seed=args.seed + 1,
                              transform=val_tf)
        return train, val, list(SyntheticScenes.classes)
    train_full = FolderDataset(args.data, transform=train_tf)
    if args.val_data:
        val = FolderDataset(args.val_data, transform=val_tf)
        if val.classes != train_full.classes:
            raise DatasetError(f"{args.val_data}: classes differ from {args.data}")
        return train_full, val, train_full.classes
    n = len(train_full)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist()
    n_val = max(1, n // 10) if n > 1 else 0
    val_full = FolderDataset(args.data, transform=val_tf)
    train = Subset(train_full, order[n_val:] or order)
    return train, Subset(val_full, order[:n_val] or order), train_full.classes


def epoch_subset(train: SegDataset, args: argparse.Namespace, epoch: int) -> SegDataset:
    """Synthetic data: epoch e sees its own fresh block of scenes."""
    if args.data == "synthetic":
        return Subset(train, range(epoch * args.epoch_size, (epoch + 1) * args.epoch_size))
    return train


# --- schedule ---------------------------------------------------------------------------------


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
    device: str,
    progress: bool,
    epoch: int,
    bf16: bool = False,
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
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(images.contiguous(memory_format=torch.channels_last))
        loss = segmentation_loss(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.item()
        count += 1
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    return total / max(count, 1)


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


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rank, world = init_distributed(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed + rank)
    device = args.device
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    try:
        train_set, val_set, classes = build_datasets(args)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    config = NetConfig(num_classes=len(classes), widths=args.widths)
    model = DeconvNet(config).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (args.epoch_size if args.data == "synthetic" else len(train_set)) // (
        args.batch_size * world)
    total_steps = max(steps_per_epoch * args.epochs, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(min(args.warmup_steps, total_steps // 5 + 1), total_steps))
    start_epoch, history, elapsed = 0, [], 0.0
    if args.resume:
        state, _ = read_payload(args.resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        start_epoch, history, elapsed = state["epoch"] + 1, state["history"], state["seconds"]
        if is_main(rank):
            log.info("resumed from %s at epoch %d", args.resume, start_epoch)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    mixers = [(args.cutmix, SegCutMix(len(classes), args.mix_alpha)),
              (args.mixup, SegMixUp(len(classes), args.mix_alpha))]
    out = Path(args.out)
    val_loader = make_loader(val_set, 8, shuffle=False, seed=0)
    progress = is_main(rank) and not args.no_progress

    last_epoch = min(args.epochs, args.stop_after or args.epochs)
    for epoch in range(start_epoch, last_epoch):
        t0 = time.perf_counter()
        subset = epoch_subset(train_set, args, epoch)
        sampler: DistributedSampler[Sample] | None = None
        if world > 1:
            sampler = DistributedSampler(subset, num_replicas=world, rank=rank, shuffle=True,
                                         seed=args.seed, drop_last=True)
            sampler.set_epoch(epoch)
        loader = make_loader(subset, args.batch_size, shuffle=True, seed=args.seed * 1000 + epoch,
                             num_workers=args.workers, sampler=sampler)
        loss = train_one_epoch(net, loader, optimizer, scheduler, mixers, device, progress, epoch,
                               args.bf16)
        elapsed += time.perf_counter() - t0
        if world > 1:
            loss_t = torch.tensor([loss], device=device)
            dist.all_reduce(loss_t)
            loss = loss_t.item() / world
        metrics = evaluate(model, val_loader, len(classes), device)
        history.append({"epoch": epoch, "loss": loss, "miou": metrics["miou"],
                        "pixel_accuracy": metrics["pixel_accuracy"], "seconds": elapsed})
        rngs = [torch.get_rng_state()]
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, torch.get_rng_state())
            rngs = gathered
        if is_main(rank):
            ious = " ".join(f"{c}={v:.3f}" for c, v in zip(classes, metrics["per_class_iou"],
                                                            strict=True))
            log.info("epoch %d/%d loss %.4f val mIoU %.4f pixel acc %.4f (%.0fs) | %s",
                     epoch + 1, args.epochs, loss, metrics["miou"], metrics["pixel_accuracy"],
                     elapsed, ious)
            training = {"command": "python -m model.train " + shlex.join(sys.argv[1:]),
                        "epochs_done": epoch + 1, "seconds": round(elapsed, 1),
                        "world_size": world, "history": history}
            payload = checkpoint_dict(
                model, classes, default_palette(len(classes)), DEFAULT_MEAN, DEFAULT_STD,
                train_size=args.crop_size,
                object_scale=list(DEFAULT_OBJECT_SCALE) if args.data == "synthetic" else [],
                metrics={"val_miou": metrics["miou"],
                         "val_pixel_accuracy": metrics["pixel_accuracy"],
                         "val_per_class_iou": dict(zip(classes, metrics["per_class_iou"],
                                                       strict=True))},
                training=training)
            save_checkpoint(out, payload)
            save_checkpoint(state_path(out), {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": rngs,
                "history": history, "seconds": elapsed, "args": vars(args) | {
                    "scale_jitter": list(args.scale_jitter)}})
            save_curves(history, out.with_name(out.stem + ".curves.png"))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if is_main(rank):
        log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
