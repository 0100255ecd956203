import builtins

import pytest
import torch

from model.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from model.classes import default_palette
from tests.tiny import CLASSES, tiny_payload


def test_round_trip_is_bit_exact(tmp_path):
    model, payload = tiny_payload()
    path = tmp_path / "m.pt"
    digest = save_checkpoint(path, payload)
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == digest
    assert not ckpt.model.training
    assert ckpt.classes == CLASSES and ckpt.palette == default_palette(3)
    assert ckpt.mean == [0.5] * 3 and ckpt.std == [0.25] * 3 and ckpt.train_size == 64
    assert ckpt.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), ckpt.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    x = torch.randn(1, 3, 13, 9)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), ckpt.model(x))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file_is_refused(tmp_path):
    _, payload = tiny_payload()
    path = tmp_path / "m.pt"
    save_checkpoint(path, payload)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.pt: truncated or corrupt"):
        load_checkpoint(path)


def test_wrong_format_version_is_refused(tmp_path):
    _, payload = tiny_payload()
    payload["format_version"] = FORMAT_VERSION + 1
    path = tmp_path / "m.pt"
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}"):
        load_checkpoint(path)


def test_pinned_sha256_mismatch_is_refused(tmp_path):
    _, payload = tiny_payload()
    path = tmp_path / "m.pt"
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        load_checkpoint(path, expected_sha256="0" * 64)


class Gadget:
    """Unpickling this would call open(marker, 'w') and create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    _, payload = tiny_payload()
    payload["metrics"] = Gadget(marker)
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused.*not executed"):
        load_checkpoint(path)
    assert not marker.exists()


def test_inconsistent_state_dict_is_reported(tmp_path):
    _, payload = tiny_payload()
    payload["config"]["widths"] = [4, 16]
    path = tmp_path / "m.pt"
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="inconsistent contents"):
        load_checkpoint(path)
