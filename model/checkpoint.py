"""Checkpoints: a plain dict of tensors and builtins, loaded only with `weights_only=True`.

Layout (format version 1):
    format, format_version, config (asdict(NetConfig)), state_dict, classes, palette,
    mean, std, train_size, object_scale, metrics, training, versions
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision

from model.net import DeconvNet, NetConfig

FORMAT = "deconvseg-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the reason."""


@dataclass
class Checkpoint:
    model: DeconvNet
    classes: list[str]
    palette: list[list[int]]
    config: NetConfig
    mean: list[float]
    std: list[float]
    train_size: int
    object_scale: list[float]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).stem if self.path else "deconvseg"


def checkpoint_dict(
    model: DeconvNet,
    classes: list[str],
    palette: list[list[int]],
    mean: Sequence[float],
    std: Sequence[float],
    train_size: int,
    object_scale: Sequence[float],
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if len(classes) != model.config.num_classes or len(palette) != len(classes):
        raise ValueError(
            f"{len(classes)} classes and {len(palette)} colours for a "
            f"{model.config.num_classes}-class model"
        )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": asdict(model.config),
        "state_dict": state,
        "classes": list(classes),
        "palette": [[int(c) for c in rgb] for rgb in palette],
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "train_size": int(train_size),
        "object_scale": [float(s) for s in object_scale],
        "metrics": metrics or {},
        "training": training or {},
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
    }


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> str:
    """Write atomically (temp file + rename); return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


def _unpickler_reason(exc: Exception) -> str:
    """The informative line of torch's weights-only refusal (e.g. 'Unsupported global: …')."""
    for line in str(exc).splitlines():
        if "Unsupported" in line or "global" in line.lower():
            return line.strip().split(" was not")[0].removeprefix("WeightsUnpickler error: ")
    return type(exc).__name__


def read_payload(path: str | Path) -> tuple[dict[str, Any], str]:
    """Safely unpickle a torch file into a dict; return it with the file's sha256."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise CheckpointError(f"{path}: file is empty")
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path}: truncated or corrupt (not a torch.save zip archive; legacy pickles "
            f"are not read)"
        )
    try:
        payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it holds objects outside the safe weights-only allowlist "
            f"({_unpickler_reason(exc)}); it was not executed"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt ({type(exc).__name__}: {str(exc)[:160]})"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a deconvseg checkpoint (top level is not a dict)")
    return payload, digest


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> Checkpoint:
    """Load a checkpoint and rebuild its model in eval mode on `device`."""
    payload, digest = read_payload(path)
    if expected_sha256 and digest.lower() != expected_sha256.lower():
        raise CheckpointError(
            f"{path}: sha256 {digest} does not match the pinned {expected_sha256.lower()}"
        )
    if payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a deconvseg checkpoint (format={payload.get('format')!r})"
        )
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r}; this build reads version {FORMAT_VERSION}"
        )
    try:
        config = NetConfig(**payload["config"])
        model = DeconvNet(config)
        model.load_state_dict(payload["state_dict"], strict=True)
        classes = [str(c) for c in payload["classes"]]
        palette = [[int(c) for c in rgb] for rgb in payload["palette"]]
        ckpt = Checkpoint(
            model=model.to(device).eval(),
            classes=classes,
            palette=palette,
            config=config,
            mean=[float(m) for m in payload["mean"]],
            std=[float(s) for s in payload["std"]],
            train_size=int(payload["train_size"]),
            object_scale=[float(s) for s in payload["object_scale"]],
            metrics=dict(payload.get("metrics", {})),
            training=dict(payload.get("training", {})),
            versions=dict(payload.get("versions", {})),
            sha256=digest,
            path=str(path),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: inconsistent contents ({type(exc).__name__}: {exc})"
        ) from None
    if len(ckpt.classes) != config.num_classes or len(ckpt.palette) != config.num_classes:
        raise CheckpointError(
            f"{path}: {len(ckpt.classes)} class names and {len(ckpt.palette)} colours for a "
            f"{config.num_classes}-class model"
        )
    return ckpt
