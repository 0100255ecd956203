"""Model repositories written on disk by tests: `<root>/<model>/<version>/model.pt`."""

from __future__ import annotations

import json
from pathlib import Path

from model.checkpoint import save_checkpoint
from tests.tiny import CLASSES, tiny_payload


def add_version(root: Path, model: str, version: int | str, seed: int = 0,
                classes: list[str] = CLASSES) -> Path:
    """Write a tiny checkpoint as `root/model/version/model.pt`; return its path."""
    path = root / model / str(version) / "model.pt"
    _, payload = tiny_payload(seed=seed, train_size=32, object_scale=(2.0, 8.0),
                              warm_up=(4, 32), classes=classes)
    save_checkpoint(path, payload)
    return path


def write_config(root: Path, model: str, **config) -> None:
    (root / model).mkdir(parents=True, exist_ok=True)
    (root / model / "config.json").write_text(json.dumps(config))
