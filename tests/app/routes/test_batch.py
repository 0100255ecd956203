import base64
import io

import numpy as np
from PIL import Image

from app.main import create_app
from app.schemas import BatchItem
from tests.support.service import image_bytes, make_settings, running_client, upload_field


def part(name: str, data: bytes):
    return ("file", (name, data, "application/octet-stream"))


async def test_results_come_in_upload_order_with_per_item_errors(client):
    files = [part("a.png", image_bytes(10, 8)), part("bad.png", b"not an image"),
             part("c.tif", image_bytes(6, 6, fmt="TIFF")), part("d.png", image_bytes(12, 9))]
    r = await client.post("/segment/batch", files=files)
    assert r.status_code == 200
    items = [BatchItem.model_validate(item) for item in r.json()]
    assert [i.filename for i in items] == ["a.png", "bad.png", "c.tif", "d.png"]
    assert [i.status for i in items] == [200, 400, 415, 200]
    assert items[0].result.width == 10 and items[3].result.height == 9
    assert items[1].error.code == "invalid_image" and items[1].result is None


async def test_batch_items_equal_single_requests(client):
    data = image_bytes(16, 12, seed=5)
    single = (await client.post("/segment", files=[part("x.png", data)])).json()
    batch = (await client.post("/segment/batch", files=[part("x.png", data)] * 3)).json()
    for item in batch:
        assert item["result"]["mask"]["data"] == single["mask"]["data"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(single["mask"]["data"]))))
    assert mask.shape == (12, 16)


async def test_rle_format_is_offered_per_item(client):
    r = await client.post("/segment/batch?format=rle", files=[part("x.png", image_bytes(5, 4))])
    assert r.json()[0]["result"]["rle"][0]["size"] == [4, 5]


async def test_png_format_is_refused_for_batches(client):
    r = await client.post("/segment/batch?format=png", files=[part("x.png", image_bytes())])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


async def test_more_files_than_the_schema_states_is_413(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_batch_files=2))
    async with running_client(app) as client:
        r = await client.post("/segment/batch",
                              files=[part(f"{i}.png", image_bytes(4, 4)) for i in range(3)])
        spec = (await client.get("/openapi.json")).json()
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_files"
    assert "DECONVSEG_MAX_BATCH_FILES" in r.json()["error"]["message"]
    for path in ("/segment/batch", "/models/{name}/segment/batch",
                 "/models/{name}/versions/{version}/segment/batch"):
        field = upload_field(spec, path)
        assert (field["minItems"], field["maxItems"]) == (1, 2)


async def test_an_empty_part_is_answered_in_its_own_item_so_the_schema_allows_it(client):
    r = await client.post("/segment/batch",
                          files=[part("a.png", b""), part("b.png", image_bytes())])
    items = upload_field((await client.get("/openapi.json")).json(), "/segment/batch")["items"]
    assert r.status_code == 200 and [item["status"] for item in r.json()] == [400, 200]
    assert r.json()[0]["error"]["code"] == "empty_file" and "minLength" not in items
