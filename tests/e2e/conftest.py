"""A real server (`python -m app`, the shipped weights) on a loopback port, for the e2e tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import start_server, stop

ROOT = Path(__file__).resolve().parents[2]
SERVER_ENV = {"DECONVSEG_CHECKPOINT": str(ROOT / "weights/model.pt"), "DECONVSEG_DEVICE": "cpu",
              "DECONVSEG_THREADS": "1", "DECONVSEG_IO_THREADS": "1"}


def serve(env: dict[str, str]) -> Iterator[str]:
    """Start the server, yield its base URL, and always stop it."""
    proc, base = start_server({**SERVER_ENV, **env})
    try:
        yield base
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    yield from serve({})
