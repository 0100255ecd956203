"""deconvseg's model side: network, data, transforms, training, checkpoints, tiling."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Checkpoint": "model.checkpoint",
    "CheckpointError": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "DeconvNet": "model.net",
    "NetConfig": "model.net",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m model.net` does not import model.net twice.
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
