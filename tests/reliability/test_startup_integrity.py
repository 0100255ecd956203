"""`python -m app` refuses a tampered, truncated or code-carrying checkpoint before serving."""

import builtins
import hashlib
import io
import struct
import zipfile

import pytest
import torch

from app.__main__ import main
from app.settings import get_settings


class Gadget:
    """Unpickling this would call open(marker, 'w') and create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def flip_a_weight_byte(data: bytes) -> bytes:
    """Flip one bit inside the largest tensor's storage: the file still loads without a pin."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    entry = max((i for i in archive.infolist() if "/data/" in i.filename),
                key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack_from("<HH", data, entry.header_offset + 26)
    start = entry.header_offset + 30 + name_len + extra_len
    tampered = bytearray(data)
    tampered[start + entry.file_size // 2] ^= 0x01
    return bytes(tampered)


@pytest.fixture
def start(monkeypatch):
    """Run the entry point in-process with these settings; it must exit before binding."""
    def run(**env: str) -> int:
        for name, value in env.items():
            monkeypatch.setenv(f"DECONVSEG_{name.upper()}", value)
        get_settings.cache_clear()
        try:
            return main()
        finally:
            get_settings.cache_clear()
    return run


def test_tampered_checkpoint_is_refused_when_its_sha256_is_pinned(start, tiny_checkpoint,
                                                                   tmp_path, capsys):
    original = tiny_checkpoint.read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(flip_a_weight_byte(original))
    code = start(checkpoint=str(path), device="cpu",
                 pinned_sha256=hashlib.sha256(original).hexdigest())
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "model.pt" in lines[0] and "does not match the pinned" in lines[0]


def test_truncated_checkpoint_is_refused(start, tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_bytes(tiny_checkpoint.read_bytes()[:3000])
    code = start(checkpoint=str(path), device="cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "model.pt" in lines[0] and "truncated or corrupt" in lines[0]


def test_pickle_gadget_is_refused_and_never_runs(start, tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"format": "deconvseg-checkpoint", "metrics": Gadget(marker)}, path)
    code = start(checkpoint=str(path), device="cpu")
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "model.pt: refused" in lines[0] and "not executed" in lines[0]
    assert not marker.exists()
