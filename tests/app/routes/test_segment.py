import asyncio
import base64
import io

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from app.errors import ClientGone
from app.main import create_app
from app.responses import status_of
from app.routes.segment import UPLOAD_PATHS, unless_disconnected, upload_route
from app.schemas import RLEResponse, SegmentResponse
from tests.support.service import (
    coco_decode,
    image_bytes,
    make_settings,
    post_image,
    running_client,
    upload_field,
)


def mask_of(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"]))))


async def test_an_empty_upload_is_400_and_outside_the_schema(client):
    r = await post_image(client, b"")
    spec = (await client.get("/openapi.json")).json()
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_file"
    for path in ("/segment", "/models/{name}/segment", "/models/{name}/versions/{version}/segment"):
        field = upload_field(spec, path)
        assert (field["minLength"], field["format"]) == (1, "binary")


async def test_json_has_size_classes_mask_areas_model_and_timings(client):
    r = await post_image(client, image_bytes(32, 24))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = SegmentResponse.model_validate(r.json()).model_dump()
    assert (body["width"], body["height"]) == (32, 24)
    assert body["classes"] == ["background", "a", "b"]
    assert mask_of(r.json()).shape == (24, 32) and mask_of(r.json()).max() < 3
    assert sum(body["areas"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["model"]["name"] == "tiny" and len(body["model"]["sha256"]) == 64
    assert "inference;dur=" in r.headers["server-timing"]


async def test_png_is_one_band_palette_image_equal_to_the_json_mask(client):
    data = image_bytes(40, 30)
    json_mask = mask_of((await post_image(client, data)).json())
    r = await post_image(client, data, fmt="png")
    image = Image.open(io.BytesIO(r.content))
    assert r.headers["content-type"] == "image/png"
    assert image.mode == "P" and image.size == (40, 30)
    assert image.getpalette()[3:6] == [230, 25, 75]
    assert np.array_equal(np.asarray(image), json_mask)


async def test_rle_is_compressed_coco_that_pycocotools_decodes_to_the_png_mask(client):
    data = image_bytes(21, 13, seed=3)
    png_mask = np.asarray(Image.open(io.BytesIO((await post_image(client, data, "png")).content)))
    body = RLEResponse.model_validate((await post_image(client, data, "rle")).json())
    rebuilt = np.full((13, 21), 255, np.uint8)
    for entry in body.rle:
        assert entry.size == [13, 21] and entry.class_name == body.classes[entry.index]
        assert isinstance(entry.counts, str)
        rle = {"size": entry.size, "counts": entry.counts.encode()}
        rebuilt[coco_mask.decode(rle).astype(bool)] = entry.index
    assert np.array_equal(rebuilt, png_mask)


async def test_uncompressed_rle_is_the_run_list_of_the_coco_spec(client):
    data = image_bytes(21, 13, seed=3)
    png_mask = np.asarray(Image.open(io.BytesIO((await post_image(client, data, "png")).content)))
    r = await client.post("/segment?format=rle&rle=uncompressed",
                          files={"file": ("x.png", data, "image/png")})
    rebuilt = np.full((13, 21), 255, np.uint8)
    for entry in RLEResponse.model_validate(r.json()).rle:
        assert isinstance(entry.counts, list)
        rebuilt[coco_decode(entry.counts, 13, 21).astype(bool)] = entry.index
    assert np.array_equal(rebuilt, png_mask)


async def test_overlay_is_an_rgb_png_of_the_upload_size(client):
    r = await post_image(client, image_bytes(50, 20), fmt="overlay")
    image = Image.open(io.BytesIO(r.content))
    assert r.status_code == 200 and image.mode == "RGB" and image.size == (50, 20)


@pytest.mark.parametrize("size", [(1, 1), (7, 600), (600, 7), (33, 17)])
async def test_odd_sizes_come_back_at_the_upload_size(client, size):
    r = await post_image(client, image_bytes(*size))
    assert r.status_code == 200 and mask_of(r.json()).shape == (size[1], size[0])


async def test_exif_orientation_6_gives_a_mask_in_the_rotated_frame(client):
    exif = Image.Exif()
    exif[0x0112] = 6
    data = image_bytes(40, 20, fmt="JPEG", exif=exif)
    body = (await post_image(client, data, name="x.jpg")).json()
    assert (body["width"], body["height"]) == (20, 40)
    assert mask_of(body).shape == (40, 20)


async def test_images_larger_than_a_tile_are_tiled_and_padding_is_measured(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, tile_size=32, tile_overlap=8))
    async with running_client(app) as client:
        body = (await post_image(client, image_bytes(100, 70))).json()
        metrics = (await client.get("/metrics")).text
    assert mask_of(body).shape == (70, 100)
    (line,) = [x for x in metrics.splitlines() if x.startswith("deconvseg_padding_ratio_sum")]
    assert float(line.split()[-1]) == pytest.approx(1 - 100 * 70 / (4 * 31 * 3 * 29))


async def test_resize_policy_still_returns_the_upload_size(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, resolution="resize"))
    async with running_client(app) as client:
        body = (await post_image(client, image_bytes(64, 48))).json()
    assert mask_of(body).shape == (48, 64)


async def test_client_disconnect_cancels_the_work():
    async def receive():
        return {"type": "http.disconnect"}

    never = asyncio.get_running_loop().create_future()
    with pytest.raises(ClientGone) as info:
        await unless_disconnected(receive, never)
    assert status_of(info.value) == 499
    await asyncio.sleep(0)  # let the cancellation land
    assert never.cancelled()


async def test_a_cancelled_handler_stays_cancelled_while_the_client_is_there():
    """Shutdown cancelling the handler is not a disconnect: CancelledError goes on, and the
    work's own code sees it (the batcher drops a queued image there)."""
    listening = asyncio.Event()
    seen = []

    async def receive():
        listening.set()
        await asyncio.Event().wait()  # the client never leaves

    async def work():
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    handler = asyncio.create_task(unless_disconnected(receive, work()))
    await listening.wait()
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
    assert seen == ["cancelled"]


async def test_work_that_finishes_is_returned_and_leaves_no_watcher():
    async def receive():
        await asyncio.Event().wait()

    async def work():
        return 7

    before = len(asyncio.all_tasks())
    assert await unless_disconnected(receive, work()) == 7
    await asyncio.sleep(0)  # the cancelled watcher finishes
    assert len(asyncio.all_tasks()) == before


@pytest.mark.parametrize(("path", "route"), [
    ("/segment", "/segment"), ("/segment/batch", "/segment/batch"),
    ("/models/roads/segment", "/models/{name}/segment"),
    ("/models/roads/versions/7/segment/batch", "/models/{name}/versions/{version}/segment/batch"),
])
def test_upload_paths_are_labelled_by_their_route_template(path, route):
    assert UPLOAD_PATHS.fullmatch(path) and upload_route(path) == route
