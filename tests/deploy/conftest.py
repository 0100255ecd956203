import io
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from model.checkpoint import checkpoint_dict, save_checkpoint
from model.classes import default_palette
from model.net import DeconvNet, NetConfig


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8])).eval()
    path = tmp_path_factory.mktemp("deploy") / "tiny.pt"
    save_checkpoint(path, checkpoint_dict(model, ["background", "a", "b"], default_palette(3),
                                          [0.5] * 3, [0.25] * 3, train_size=32,
                                          object_scale=[2.0, 8.0]))
    return path


def random_png(width: int, height: int) -> bytes:
    array = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
