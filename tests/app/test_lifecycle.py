import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from app.main import create_app
from app.service import Service
from app.settings import Settings, describe_validation_error
from tests.app.conftest import (
    GatedService,
    make_settings,
    png_bytes,
    running_client,
    wait_until_ready,
)


async def post(client, data):
    return await client.post("/segment", files={"file": ("x.png", data, "image/png")})


async def test_readiness_is_503_until_warm_up_finishes(tiny_checkpoint):
    release = threading.Event()

    class SlowWarmUp(Service):
        def start(self):
            release.wait(10)
            super().start()

    app = create_app(make_settings(tiny_checkpoint), service_factory=SlowWarmUp)
    async with running_client(app, wait_ready=False) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert (await client.get("/healthz")).status_code == 200
        assert (await post(client, png_bytes())).status_code == 503
        release.set()
        await wait_until_ready(app)
        assert (await client.get("/readyz")).status_code == 200
        assert (await post(client, png_bytes())).status_code == 200


async def test_full_queue_is_503_with_retry_after(tiny_checkpoint):
    settings = make_settings(tiny_checkpoint, max_batch_size=1, max_queue=1)
    app = create_app(settings, service_factory=GatedService)
    async with running_client(app) as client:
        service = app.state.service
        busy = asyncio.create_task(post(client, png_bytes()))
        await asyncio.to_thread(service.entered.wait, 10)
        queued = asyncio.create_task(post(client, png_bytes(seed=1)))
        while service.batcher.depth < 1:
            await asyncio.sleep(0.001)
        r = await post(client, png_bytes(seed=2))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        service.gate.set()
        assert (await busy).status_code == 200 and (await queued).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert 'deconvseg_dropped_total{reason="queue_full"} 1.0' in metrics


async def test_request_past_deadline_is_504(tiny_checkpoint):
    settings = make_settings(tiny_checkpoint, max_batch_size=1, request_timeout_s=0.2)
    app = create_app(settings, service_factory=GatedService)
    async with running_client(app) as client:
        service = app.state.service
        busy = asyncio.create_task(post(client, png_bytes()))
        await asyncio.to_thread(service.entered.wait, 10)
        r = await post(client, png_bytes(seed=1))
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        service.gate.set()
        await busy
        metrics = (await client.get("/metrics")).text
    assert 'deconvseg_dropped_total{reason="deadline"}' in metrics


async def test_model_card_describes_the_checkpoint_and_batching(client):
    card = (await client.get("/model")).json()
    assert card["classes"] == ["background", "a", "b"] and len(card["palette"]) == 3
    assert card["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert len(card["sha256"]) == 64 and card["train_size"] == 32
    assert card["batching"]["max_batch_size"] == 4
    assert card["input_policy"]["max_pixels"] == 200_000
    assert card["architecture"]["parameters"] > 0


async def test_openapi_documents_routes_and_error_statuses(client):
    spec = (await client.get("/openapi.json")).json()
    segment = spec["paths"]["/segment"]["post"]
    assert {"400", "401", "413", "415", "422", "503", "504"} <= set(segment["responses"])
    assert "image/png" in segment["responses"]["200"]["content"]
    assert {"/segment", "/segment/batch", "/model", "/healthz", "/readyz", "/metrics"} <= set(
        spec["paths"])
    assert "examples" in str(spec["components"]["schemas"]["SegmentResponse"])
    assert (await client.get("/docs")).status_code == 200


def test_invalid_setting_is_named(monkeypatch):
    monkeypatch.setenv("DECONVSEG_MAX_BATCH_SIZE", "0")
    with pytest.raises(Exception) as info:
        Settings()
    assert "DECONVSEG_MAX_BATCH_SIZE" in describe_validation_error(info.value)


def test_overlap_must_be_smaller_than_tile():
    with pytest.raises(ValueError, match="DECONVSEG_TILE_OVERLAP"):
        Settings(tile_size=64, tile_overlap=64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_app(env_extra, **kwargs):
    env = {**os.environ, "DECONVSEG_THREADS": "1", "DECONVSEG_DEVICE": "cpu", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "app"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def test_bad_checkpoint_exits_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"garbage")
    proc = run_app({"DECONVSEG_CHECKPOINT": str(bad)})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    lines = [line for line in out.strip().splitlines() if line]
    assert len(lines) == 1 and "broken.pt" in lines[0] and "corrupt" in lines[0]


def test_invalid_setting_exits_non_zero_naming_it(tiny_checkpoint):
    proc = run_app({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_PORT": "70000"})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "DECONVSEG_PORT" in out


@pytest.mark.slow
def test_real_uvicorn_serves_a_real_image_and_stops_on_sigterm(tiny_checkpoint):
    port = free_port()
    proc = run_app({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        r = httpx.post(f"{base}/segment?format=png",
                       files={"file": ("x.png", png_bytes(64, 48), "image/png")}, timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    # uvicorn drains, runs the lifespan shutdown, then re-raises SIGTERM as its exit status.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "draining" in out and "stopped" in out
