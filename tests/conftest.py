import pytest
import torch

from model.checkpoint import save_checkpoint
from tests.tiny import tiny_payload


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run on 2 shared cores: keep torch from oversubscribing them."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The tiny model (tests/tiny.py) saved as a checkpoint, trained at 32² on small objects."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    _, payload = tiny_payload(train_size=32, object_scale=(2.0, 8.0), warm_up=(4, 32))
    save_checkpoint(path, payload)
    return path
