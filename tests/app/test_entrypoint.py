"""`python -m app` as a real process: start-up failures, and one real uvicorn round trip."""

import os
import signal
import subprocess
import sys

import httpx
import pytest

from bench.load import free_port, wait_ready
from tests.support.service import image_bytes


def start(env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "DECONVSEG_THREADS": "1", "DECONVSEG_IO_THREADS": "1",
           "DECONVSEG_DEVICE": "cpu", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "app"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_bad_checkpoint_exits_non_zero_with_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"garbage")
    proc = start({"DECONVSEG_CHECKPOINT": str(bad)})
    out, _ = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.strip()]
    assert proc.returncode == 1
    assert len(lines) == 1 and "broken.pt" in lines[0] and "corrupt" in lines[0]


def test_invalid_setting_exits_non_zero_naming_it(tiny_checkpoint):
    proc = start({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_PORT": "70000"})
    out, _ = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "DECONVSEG_PORT=70000" in lines[0]


@pytest.mark.slow
def test_real_uvicorn_serves_an_image_and_drains_on_sigterm(tiny_checkpoint):
    port = free_port()
    proc = start({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_ready(proc, base, 120, proc.stdout.read), "the server never became ready"
        r = httpx.post(f"{base}/segment?format=png",
                       files={"file": ("x.png", image_bytes(64, 48), "image/png")}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "draining" in out and "stopped" in out
