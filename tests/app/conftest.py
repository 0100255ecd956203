import pytest
import torch

from app.main import create_app
from model.checkpoint import checkpoint_dict, save_checkpoint
from model.classes import default_palette
from model.net import DeconvNet, NetConfig
from tests.app.support import CLASSES, make_settings, running_client


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 3-class DeconvNet with widths [4, 8], random weights and non-trivial BN statistics."""
    torch.manual_seed(0)
    model = DeconvNet(NetConfig(num_classes=3, widths=[4, 8]))
    model.train()
    model(torch.randn(4, 3, 32, 32))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, checkpoint_dict(model.eval(), CLASSES, default_palette(3),
                                          [0.5] * 3, [0.25] * 3, train_size=32,
                                          object_scale=[2.0, 8.0],
                                          metrics={"val_miou": 0.5}))
    return path


@pytest.fixture
def settings(tiny_checkpoint):
    return make_settings(tiny_checkpoint)


@pytest.fixture
async def client(settings):
    async with running_client(create_app(settings)) as c:
        yield c
