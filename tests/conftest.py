import json
from pathlib import Path

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


@pytest.fixture(scope="session")
def responsive_checkpoint(tmp_path_factory):
    """The tiny model with its head's bias at zero: with random weights the bias alone decides
    every pixel, so the mask would not depend on the image (or on how it was normalised)."""
    path = tmp_path_factory.mktemp("ckpt") / "responsive.pt"
    model, payload = tiny_payload(train_size=32, object_scale=(2.0, 8.0), warm_up=(4, 32))
    with torch.no_grad():
        model.head.bias.zero_()
    payload["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_checkpoint(path, payload)
    return path


# Left out under mutmut: they start processes, train, or load and swap model repositories
# (outside the mutated modules), seconds per test, and every surviving mutant of a function they
# reach (most of app/) would wait for them; so are the `slow` tests of the other files (the
# shipped model on held-out scenes). Each still runs in `make test`.
SLOW_UNDER_MUTATION = ("tests/app/test_entrypoint.py", "tests/app/test_registry.py",
                       "tests/model/test_distributed.py", "tests/model/test_train.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `make mutation` only (mutmut runs the tests from inside `mutants/`, beside its
    stats): the tests above are left out, and the rest run fastest first, by the durations mutmut
    recorded. mutmut stops at the first failure (`-x`), so a mutant a quick unit test kills no
    longer waits behind the end-to-end tests that also reach its function."""
    stats = Path("mutmut-stats.json")
    if Path.cwd().name != "mutants" or not stats.is_file():
        return
    slow = [item for item in items if item.nodeid.startswith(SLOW_UNDER_MUTATION)
            or item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]
    durations = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
