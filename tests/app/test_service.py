import asyncio

import pytest

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


def sample(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("forward", ["per_item", "stacked"])
async def test_concurrent_requests_are_batched_with_sequential_results(tiny_checkpoint, forward):
    settings = make_settings(tiny_checkpoint, max_batch_size=4, batch_forward=forward)
    app = create_app(settings, factory=GatedVersion)
    images = [image_bytes(24, 24, seed=i) for i in range(4)]
    async with running_client(app) as client:
        service = serving(app)
        service.gate.set()
        sequential = [(await post_image(client, data)).json()["mask"] for data in images]
        service.gate.clear()
        service.entered.clear()
        blocker = asyncio.create_task(post_image(client, image_bytes(8, 8)))
        await entered(service)  # the worker is busy: the next four pile up in the queue
        together = [asyncio.create_task(post_image(client, data)) for data in images]
        await queued(app, 4)
        service.gate.set()
        responses = await asyncio.gather(blocker, *together)
        metrics = (await client.get("/metrics")).text
    assert [r.json()["mask"] for r in responses[1:]] == sequential
    assert len(service.batches[-1]) == 4
    labels = 'model="tiny",version="1"'
    ones = sample(metrics, f'deconvseg_batch_size_bucket{{le="1.0",{labels}}}')
    assert sample(metrics, f"deconvseg_batch_size_count{{{labels}}}") - ones >= 1  # a batch > 1


async def test_full_queue_is_503_with_retry_after(tiny_checkpoint):
    settings = make_settings(tiny_checkpoint, max_batch_size=1, max_queue=1)
    app = create_app(settings, factory=GatedVersion)
    async with running_client(app) as client:
        service = serving(app)
        busy = asyncio.create_task(post_image(client, image_bytes()))
        await entered(service)
        waiting = asyncio.create_task(post_image(client, image_bytes(seed=1)))
        await queued(app, 1)
        r = await post_image(client, image_bytes(seed=2))
        service.gate.set()
        assert (await busy).status_code == 200 and (await waiting).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "queue_full" and "1 images queued" in r.text
    assert sample(metrics, 'deconvseg_dropped_total{reason="queue_full"}') == 1


async def test_request_past_its_deadline_is_504_and_never_computed(tiny_checkpoint):
    # The deadline also bounds the follow-up request: 2 s leaves it room on a loaded machine.
    settings = make_settings(tiny_checkpoint, max_batch_size=1, request_timeout_s=2)
    app = create_app(settings, factory=GatedVersion)
    async with running_client(app) as client:
        service = serving(app)
        busy = asyncio.create_task(post_image(client, image_bytes(8, 8)))
        await entered(service)
        late = await post_image(client, image_bytes(9, 9))
        service.gate.set()
        await busy
        after = await post_image(client, image_bytes(10, 10))  # the worker has moved past 9×9
        metrics = (await client.get("/metrics")).text
    assert late.status_code == 504 and late.json()["error"]["code"] == "deadline_exceeded"
    assert after.status_code == 200
    assert [(9, 9)] not in service.batches and [(10, 10)] in service.batches
    assert sample(metrics, 'deconvseg_dropped_total{reason="deadline"}') == 1


async def test_disconnected_request_is_dropped_before_compute(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_batch_size=1),
                     factory=GatedVersion)
    async with running_client(app) as client:
        service = serving(app)
        busy = asyncio.create_task(post_image(client, image_bytes(8, 8)))
        await entered(service)
        gone = asyncio.create_task(post_image(client, image_bytes(9, 9)))
        await queued(app, 1)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone  # returns once the handler's work has been cancelled
        service.gate.set()
        await busy
        await post_image(client, image_bytes(10, 10))
        metrics = (await client.get("/metrics")).text
    assert [(9, 9)] not in service.batches
    assert sample(metrics, 'deconvseg_dropped_total{reason="disconnect"}') == 1


class BrokenOnWideImages(ModelVersion):
    def predict(self, items, context):
        if items[0].width > 30:
            raise RuntimeError("simulated kernel failure")
        return super().predict(items, context)


async def test_inference_failure_is_a_json_500_for_that_image_only(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint), factory=BrokenOnWideImages)
    async with running_client(app) as client:
        bad = await post_image(client, image_bytes(40, 8))
        good = await post_image(client, image_bytes(20, 8))
    assert bad.status_code == 500 and bad.json()["error"]["code"] == "inference_failed"
    assert good.status_code == 200
