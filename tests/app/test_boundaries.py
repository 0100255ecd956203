"""Every limit exactly: at the limit is accepted, one over is refused. Keys that differ from the
configured one by case, a missing or an extra character are refused."""

import asyncio

import pytest

from app.main import create_app
from tests.support.service import (
    GatedVersion,
    image_bytes,
    make_settings,
    post_image,
    running_client,
)

W, H = 40, 25  # a 1,000-pixel image with a 40-pixel side


def status(r) -> tuple[int, str | None]:
    """The status and, for an error, its code (our shape, or the /v2 "code: message" one)."""
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):
        return r.status_code, error.split(":", 1)[0]
    return r.status_code, (error or {}).get("code")


@pytest.mark.parametrize(("limit", "expected"), [
    (W * H, (200, None)), (W * H - 1, (413, "too_many_pixels"))])
async def test_pixels_at_the_limit_pass_and_one_over_is_refused(tiny_checkpoint, limit,
                                                                expected):
    app = create_app(make_settings(tiny_checkpoint, max_pixels=limit))
    async with running_client(app) as client:
        assert status(await post_image(client, image_bytes(W, H))) == expected


@pytest.mark.parametrize(("limit", "expected"), [
    (W, (200, None)), (W - 1, (413, "side_too_long"))])
async def test_the_longest_side_at_the_limit_passes_and_one_over_is_refused(tiny_checkpoint,
                                                                            limit, expected):
    app = create_app(make_settings(tiny_checkpoint, max_side=limit))
    async with running_client(app) as client:
        assert status(await post_image(client, image_bytes(W, H))) == expected


def multipart(data: bytes) -> bytes:
    return (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--x--\r\n")


BODY = multipart(image_bytes(W, H))
HEADERS = {"content-type": "multipart/form-data; boundary=x"}


@pytest.mark.parametrize(("limit", "expected"), [
    (len(BODY), (200, None)), (len(BODY) - 1, (413, "payload_too_large"))])
async def test_a_declared_body_at_the_limit_passes_and_one_byte_over_is_refused(
        tiny_checkpoint, limit, expected):
    app = create_app(make_settings(tiny_checkpoint, max_upload_bytes=limit))
    async with running_client(app) as client:
        r = await client.post("/segment", content=BODY, headers=HEADERS)
        assert status(r) == expected


@pytest.mark.parametrize(("limit", "expected"), [
    (len(BODY), (200, None)), (len(BODY) - 1, (413, "payload_too_large"))])
async def test_a_chunked_body_at_the_limit_passes_and_one_byte_over_is_refused(
        tiny_checkpoint, limit, expected):
    async def chunks():  # no Content-Length: counted as it streams
        for start in range(0, len(BODY), 1000):
            yield BODY[start:start + 1000]

    app = create_app(make_settings(tiny_checkpoint, max_upload_bytes=limit))
    async with running_client(app) as client:
        r = await client.post("/segment", content=chunks(), headers=HEADERS)
        assert status(r) == expected


@pytest.mark.parametrize(("files", "expected"), [(3, (200, None)),
                                                 (4, (413, "too_many_files"))])
async def test_batch_files_at_the_limit_pass_and_one_more_is_refused(tiny_checkpoint, files,
                                                                     expected):
    app = create_app(make_settings(tiny_checkpoint, max_batch_files=3))
    parts = [("file", (f"{i}.png", image_bytes(8, 8, seed=i), "image/png"))
             for i in range(files)]
    async with running_client(app) as client:
        assert status(await client.post("/segment/batch", files=parts)) == expected


async def test_the_queue_takes_exactly_max_queue_images_while_the_worker_is_busy(
        tiny_checkpoint):
    """One worker, batches of one: the image being computed plus `max_queue` waiting are
    admitted; the next is 503 queue_full."""
    settings = make_settings(tiny_checkpoint, max_batch_size=1, max_queue=2, workers=1)
    app = create_app(settings, factory=GatedVersion)
    async with running_client(app) as client:
        version = app.state.registry.serving(None)
        computing = asyncio.create_task(post_image(client, image_bytes(8, 8)))
        assert await asyncio.to_thread(version.entered.wait, 10)
        queued = [asyncio.create_task(post_image(client, image_bytes(8, 8, seed=i)))
                  for i in (1, 2)]
        assert await asyncio.to_thread(app.state.runtime.batcher.wait_until_queued, 2, 10)
        over = await post_image(client, image_bytes(8, 8, seed=3))
        version.gate.set()
        answers = await asyncio.gather(computing, *queued)
    assert status(over) == (503, "queue_full")
    assert [r.status_code for r in answers] == [200, 200, 200]


KEY = "s3cret-Key"


@pytest.mark.parametrize("supplied", [KEY.lower(), KEY.upper(), KEY[:-1], KEY + "x", KEY[1:],
                                      ""])
@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_an_api_key_off_by_case_or_one_character_is_401(tiny_checkpoint, supplied,
                                                               header):
    app = create_app(make_settings(tiny_checkpoint, api_key=KEY))
    value = f"Bearer {supplied}" if header == "Authorization" else supplied
    async with running_client(app) as client:
        r = await post_image(client, image_bytes(8, 8), headers={header: value})
        assert status(r) == (401, "unauthorized")
        good = f"Bearer {KEY}" if header == "Authorization" else KEY
        ok = await post_image(client, image_bytes(8, 8), headers={header: good})
        assert ok.status_code == 200


@pytest.mark.parametrize("supplied", [KEY.lower(), KEY[:-1], KEY + "x", KEY[1:]])
@pytest.mark.parametrize("header", ["X-Admin-Key", "Authorization"])
async def test_an_admin_key_off_by_case_or_one_character_is_401(tiny_checkpoint, supplied,
                                                                 header):
    app = create_app(make_settings(tiny_checkpoint, admin_key=KEY))
    value = f"Bearer {supplied}" if header == "Authorization" else supplied
    async with running_client(app) as client:
        r = await client.post("/v2/repository/index", headers={header: value})
        assert status(r) == (401, "unauthorized")
        good = f"Bearer {KEY}" if header == "Authorization" else KEY
        ok = await client.post("/v2/repository/index", headers={header: good})
        assert ok.status_code == 200
