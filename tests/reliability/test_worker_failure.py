"""A dead inference worker: not ready at once, no request left hanging, process exits 3."""

import httpx
import pytest

from app.main import create_app
from tests.reliability.faulty_app import POISON_WIDTH, DyingVersion, WorkerKilled
from tests.support.server import start_server, stop
from tests.support.service import image_bytes, make_settings, post_image, running_client


async def test_dead_worker_turns_readiness_503_and_refuses_work(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint), factory=DyingVersion)
    async with running_client(app) as client:
        before = await client.get("/readyz")
        poisoned = await post_image(client, image_bytes(POISON_WIDTH, 8))
        ready = await client.get("/readyz")
        later = await post_image(client, image_bytes(20, 8))
        metrics = (await client.get("/metrics")).text
    assert before.status_code == 200
    assert isinstance(app.state.runtime.batcher.failed, WorkerKilled)
    for r in (poisoned, ready, later):  # the poisoned request is answered, not left to time out
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert r.headers["retry-after"] == "1"
    assert "inference worker died" in ready.text
    assert "deconvseg_ready 0.0" in metrics


@pytest.mark.slow
def test_process_exits_with_status_3_when_its_worker_dies(tiny_checkpoint, tmp_path):
    log = tmp_path / "server.log"
    proc, base = start_server({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint),
                               "DECONVSEG_THREADS": "1", "DECONVSEG_DEVICE": "cpu"},
                              module="tests.reliability.faulty_app", log=log)
    try:
        def post(width: int) -> httpx.Response:
            return httpx.post(f"{base}/segment", timeout=30,
                              files={"file": ("x.png", image_bytes(width, 8), "image/png")})

        good, poisoned = post(20), post(POISON_WIDTH)
        code = proc.wait(timeout=60)  # it shuts itself down: no signal is sent
    finally:
        stop(proc)
    text = log.read_text()
    assert good.status_code == 200 and poisoned.status_code == 503
    assert code == 3, text
    assert "inference worker died" in text and "exit status 3" in text
