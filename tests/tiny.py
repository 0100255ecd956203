"""The tiny model every test checkpoint is made of: 3 classes, widths [4, 8], random weights."""

import torch

from model.checkpoint import checkpoint_dict
from model.classes import default_palette
from model.net import DeconvNet, NetConfig

CLASSES = ["background", "a", "b"]


def tiny_payload(seed: int = 0, train_size: int = 64, object_scale: tuple = (7.0, 30.0),
                 warm_up: tuple[int, int] = (2, 16),
                 classes: list[str] = CLASSES) -> tuple[DeconvNet, dict]:
    """The model and its checkpoint dict. A training-mode forward on `warm_up` = (batch, side)
    random images first makes the BatchNorm statistics non-trivial, so they are covered too."""
    torch.manual_seed(seed)
    model = DeconvNet(NetConfig(num_classes=len(classes), widths=[4, 8]))
    model.train()
    batch, side = warm_up
    model(torch.randn(batch, 3, side, side))
    return model, checkpoint_dict(model, classes, default_palette(len(classes)), [0.5] * 3,
                                  [0.25] * 3,
                                  train_size=train_size, object_scale=list(object_scale),
                                  metrics={"val_miou": 0.5})
