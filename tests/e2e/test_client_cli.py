"""`python -m app.client` as a real process against a real server."""

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
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


def segment_api(server: str, image: Path, **params) -> httpx.Response:
    return httpx.post(f"{server}/segment", params=params, timeout=60,
                      files={"file": (image.name, image.read_bytes())})


def scene_file(folder: Path, size: int, index: int) -> Path:
    image = folder / "scene.jpg"
    image.write_bytes(scene_jpeg(size, index))
    return image


def test_cli_geojson_output_is_the_apis_feature_collection(server, tmp_path):
    image = scene_file(tmp_path, 96, 3)

    proc = run_client(str(image), "--url", server, "--format", "geojson", "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "scene.geojson")
    written = json.loads((tmp_path / "scene.geojson").read_text())
    assert written == segment_api(server, image, format="geojson").json()
    assert written["type"] == "FeatureCollection" and written["features"]


def test_cli_min_area_leaves_out_exactly_the_smaller_objects(server, tmp_path):
    image = scene_file(tmp_path, 96, 3)
    every = segment_api(server, image, format="objects").json()["objects"]
    cut = sorted(o["area"] for o in every)[len(every) // 2]

    proc = run_client(str(image), "--url", server, "--format", "objects", "--min-area", str(cut),
                      "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    kept = json.loads(Path(proc.stdout.strip()).read_text())["objects"]
    assert kept == [o for o in every if o["area"] >= cut] and len(kept) < len(every)


def test_cli_tolerance_is_the_apis_polygon_simplification(server, tmp_path):
    image = scene_file(tmp_path, 96, 3)

    proc = run_client(str(image), "--url", server, "--format", "geojson", "--tolerance", "2",
                      "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    written = json.loads(Path(proc.stdout.strip()).read_text())
    assert written == segment_api(server, image, format="geojson", tolerance=2).json()
    assert written != segment_api(server, image, format="geojson").json()


def test_cli_npy_output_is_the_label_mask(server, tmp_path):
    image = scene_file(tmp_path, 72, 6)

    proc = run_client(str(image), "--url", server, "--format", "npy", "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    labels = np.load(proc.stdout.strip())
    png = segment_api(server, image, format="png")
    with Image.open(io.BytesIO(png.content)) as mask:
        assert labels.dtype == np.uint8 and np.array_equal(labels, np.asarray(mask))


def test_cli_include_adds_confidence_and_objects_to_the_json(server, tmp_path):
    image = scene_file(tmp_path, 64, 2)

    proc = run_client(str(image), "--url", server, "--format", "json",
                      "--include", "confidence,objects", "--out", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    body = json.loads(Path(proc.stdout.strip()).read_text())
    assert body["confidence"]["encoding"] == "png" and body["objects"]
    with Image.open(io.BytesIO(base64.b64decode(body["confidence"]["data"]))) as confidence:
        assert confidence.mode == "L" and confidence.size == (64, 64)
