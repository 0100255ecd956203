"""deconvseg's model side: network, data, transforms, training, checkpoints, tiling."""

from model.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from model.net import DeconvNet, NetConfig

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DeconvNet",
    "NetConfig",
    "load_checkpoint",
    "save_checkpoint",
]
