"""`python -m app` as a real process: start-up failures, and one real uvicorn round trip."""

import os
import signal
import subprocess
import sys

import httpx
import pytest

from tests.support.repository import add_version, write_config
from tests.support.server import free_port, wait_ready
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


def test_repository_with_no_loadable_model_exits_1_with_one_line_per_failure(tmp_path):
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "a" / "1" / "model.pt").write_bytes(b"garbage")
    add_version(tmp_path, "b", 1)
    write_config(tmp_path, "b", colour="blue")
    proc = start({"DECONVSEG_MODEL_REPOSITORY": str(tmp_path)})
    out, _ = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 2, out
    assert "a/1/model.pt: truncated or corrupt" in lines[0] and lines[0].startswith("deconvseg:")
    assert "b/config.json: unknown key 'colour'" in lines[1]


@pytest.mark.parametrize("setting", ["missing_repository", "unknown_default"])
def test_an_unusable_repository_setting_exits_1_with_one_line(tmp_path, setting):
    add_version(tmp_path, "seg", 1)
    env = ({"DECONVSEG_MODEL_REPOSITORY": str(tmp_path / "nowhere")}
           if setting == "missing_repository" else
           {"DECONVSEG_MODEL_REPOSITORY": str(tmp_path), "DECONVSEG_DEFAULT_MODEL": "roads"})
    proc = start(env)
    out, _ = proc.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, out
    expected = "nowhere: the model repository does not exist" if setting.startswith("missing") \
        else "DECONVSEG_DEFAULT_MODEL=roads: no such model in the repository (models: seg)"
    assert expected in lines[0]


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
