import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run on 2 shared cores: keep torch from oversubscribing them."""
    torch.set_num_threads(1)
