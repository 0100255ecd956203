"""Overload: refusals before decoding, and a real burst answered only with 200 or 503."""

import asyncio

import pytest

from app.main import create_app
from tests.support.server import (
    Tally,
    closed_loop,
    memory_trims,
    multipart_request,
    open_loop,
    rss_mb,
    settled,
    start_server,
    stop,
)
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


class CountingDecodes(GatedVersion):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decodes = 0

    def decode(self, data, *args, **kwargs):
        self.decodes += 1
        return super().decode(data, *args, **kwargs)


async def test_upload_at_capacity_is_refused_before_its_body_is_parsed(tiny_checkpoint):
    settings = make_settings(tiny_checkpoint, max_batch_size=1, max_queue=1, workers=1)
    app = create_app(settings, factory=CountingDecodes)
    async with running_client(app) as client:
        version = serving(app)
        busy = asyncio.create_task(post_image(client, image_bytes()))
        await entered(version)
        waiting = asyncio.create_task(post_image(client, image_bytes(seed=1)))
        await queued(app, 1)
        # Not multipart at all: parsed, it would be a 400; refused before parsing, a 503.
        refused = await client.post("/segment", content=b"not multipart",
                                    headers={"content-type": "multipart/form-data; boundary=x"})
        version.gate.set()
        served = [(await busy).status_code, (await waiting).status_code]
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["retry-after"] == "1"
    assert served == [200, 200] and version.decodes == 2  # the refused one never decoded


@pytest.mark.slow
def test_burst_at_ten_times_capacity_gets_only_200_or_503_and_rss_stays_bounded(
        tiny_checkpoint, tmp_path):
    env = {"DECONVSEG_CHECKPOINT": str(tiny_checkpoint), "DECONVSEG_DEVICE": "cpu",
           "DECONVSEG_THREADS": "1", "DECONVSEG_WORKERS": "1", "DECONVSEG_MAX_BATCH_SIZE": "1",
           "DECONVSEG_MAX_QUEUE": "1"}
    proc, base = start_server(env, log=tmp_path / "server.log")
    try:
        requests = [multipart_request(base, image_bytes(384, 384, seed=i)) for i in range(4)]
        tally = Tally()
        busy = asyncio.run(closed_loop(base, requests, 2, 2, tally))
        capacity = sum(o.status == 200 for o in busy) / 2
        assert capacity > 0, "no request succeeded before the burst"
        bursts, rss = [], []
        for _ in range(2):  # the same burst twice: memory must not grow with each one
            trims = memory_trims(base)
            outcomes, _ = asyncio.run(open_loop(base, requests, 10 * capacity, 2, tally))
            bursts.append(outcomes)
            settled(base, trims)  # the server went quiet and handed freed memory back
            rss.append(rss_mb(proc.pid))
    finally:
        stop(proc)
    outcomes = bursts[0] + bursts[1]
    assert {o.status for o in outcomes} == {200, 503}
    assert all(o.retry_after for o in outcomes if o.status == 503)
    assert rss[1] < 1.1 * rss[0]
