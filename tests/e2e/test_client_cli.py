"""`python -m app.client` as a real process against a real server."""

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support.server import scene_jpeg

pytestmark = pytest.mark.slow


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.client", "--quiet", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_masks_and_exits_1_naming_the_refused_file(server, tmp_path):
    images = []
    for i, size in enumerate((64, 96)):
        images.append(tmp_path / f"scene{i}.jpg")
        images[-1].write_bytes(scene_jpeg(size, i))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    refusal = httpx.post(f"{server}/segment", timeout=30,
                         files={"file": ("notes.png", bad.read_bytes())}).json()["error"]
    out = tmp_path / "masks"

    proc = run_client(*map(str, [*images, bad]), "--url", server, "--out", str(out))

    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines() == [str(out / "scene0.mask.png"), str(out / "scene1.mask.png")]
    for path, size in zip(proc.stdout.splitlines(), (64, 96), strict=True):
        with Image.open(path) as mask:
            assert mask.mode == "P" and mask.size == (size, size)
    assert f"notes.png: HTTP 400 {refusal['code']}: {refusal['message']}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_json_output_is_the_api_response_and_exits_0(server, tmp_path):
    image = tmp_path / "scene.jpg"
    image.write_bytes(scene_jpeg(80, 5))

    proc = run_client(str(image), "--url", server, "--format", "json", "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    body = json.loads(Path(proc.stdout.strip()).read_text())
    assert body["classes"] == httpx.get(f"{server}/model", timeout=30).json()["classes"]
    assert (body["width"], body["height"]) == (80, 80)
    assert abs(sum(body["areas"].values()) - 1) < 1e-3
