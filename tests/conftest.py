import pytest
import torch

from model.checkpoint import checkpoint_dict, save_checkpoint
from model.classes import default_palette
from model.net import DeconvNet, NetConfig


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run on 2 shared cores: keep torch from oversubscribing them."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 3-class DeconvNet with widths [4, 8], random weights and non-trivial BN statistics."""
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8]))
    model.train()
    model(torch.randn(4, 3, 32, 32))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    classes = ["background", "a", "b"]  # tests/app/support.CLASSES
    save_checkpoint(path, checkpoint_dict(model.eval(), classes, default_palette(3),
                                          [0.5] * 3, [0.25] * 3, train_size=32,
                                          object_scale=[2.0, 8.0],
                                          metrics={"val_miou": 0.5}))
    return path
