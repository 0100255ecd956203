import asyncio
import threading

import httpx

from app.main import create_app
from app.pipeline import ModelVersion
from tests.support.service import (
    GatedVersion,
    entered,
    image_bytes,
    make_settings,
    post_image,
    queued,
    running_client,
    serving,
)


async def test_readiness_is_503_until_warm_up_finishes(tiny_checkpoint):
    release = threading.Event()

    class SlowWarmUp(ModelVersion):
        def warm_up(self, threads):
            assert release.wait(10)
            super().warm_up(threads)

    app = create_app(make_settings(tiny_checkpoint), factory=SlowWarmUp)
    async with running_client(app, wait_ready=False) as client:
        ready = await client.get("/readyz")
        live = await client.get("/healthz")
        early = await post_image(client, image_bytes())
        release.set()
        await app.state.warm_up
        ready_after = await client.get("/readyz")
        served = await post_image(client, image_bytes())
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert ready.headers["retry-after"] == "1" and "warming up" in ready.text
    assert live.status_code == 200
    assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
    assert ready_after.status_code == 200 and served.status_code == 200


async def test_shutdown_refuses_new_work_and_finishes_queued_images(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_batch_size=1),
                     factory=GatedVersion)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    await app.state.warm_up
    service = serving(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as client:
        running = asyncio.create_task(post_image(client, image_bytes(8, 8)))
        await entered(service)
        waiting = asyncio.create_task(post_image(client, image_bytes(9, 9)))
        await queued(app, 1)
        stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
        await asyncio.sleep(0)  # let the shutdown task start: it marks the service draining
        ready = await client.get("/readyz")
        refused = await post_image(client, image_bytes(10, 10))
        service.gate.set()
        await stopping
        finished = [await running, await waiting]
    assert ready.status_code == 503 and "shutting down" in ready.text
    assert refused.status_code == 503
    assert [r.status_code for r in finished] == [200, 200]
    assert service.batches == [[(8, 8)], [(9, 9)]]
