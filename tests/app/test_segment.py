import asyncio
import base64
import io

import numpy as np
import pytest
from PIL import Image

from app.encode import rle_decode
from app.main import create_app
from tests.app.conftest import make_settings, png_bytes, running_client


def mask_from_json(body):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"]))))


async def post(client, data, fmt=None, name="x.png"):
    url = "/segment" + (f"?format={fmt}" if fmt else "")
    return await client.post(url, files={"file": (name, data, "application/octet-stream")})


async def test_json_response_has_mask_areas_model_and_timings(client):
    r = await post(client, png_bytes(32, 24))
    assert r.status_code == 200
    body = r.json()
    assert (body["width"], body["height"]) == (32, 24)
    assert body["classes"] == ["background", "a", "b"]
    mask = mask_from_json(body)
    assert mask.shape == (24, 32) and mask.max() < 3
    assert sum(body["areas"].values()) == pytest.approx(1.0, abs=1e-4)
    assert len(body["model"]["sha256"]) == 64
    assert set(body["timings_ms"]) == {"decode", "queue", "inference", "encode"}


async def test_png_format_is_one_band_class_index_image_with_palette(client):
    json_mask = mask_from_json((await post(client, png_bytes(40, 30))).json())
    r = await post(client, png_bytes(40, 30), fmt="png")
    assert r.headers["content-type"] == "image/png"
    im = Image.open(io.BytesIO(r.content))
    assert im.mode == "P" and im.size == (40, 30)
    assert im.getpalette()[3:6] == [230, 25, 75]
    assert np.array_equal(np.asarray(im), json_mask)


async def test_rle_format_decodes_to_the_same_mask(client):
    json_mask = mask_from_json((await post(client, png_bytes(21, 13, seed=3))).json())
    body = (await post(client, png_bytes(21, 13, seed=3), fmt="rle")).json()
    rebuilt = np.zeros((13, 21), np.uint8)
    covered = np.zeros((13, 21), int)
    for entry in body["rle"]:
        assert entry["size"] == [13, 21]
        part = rle_decode(entry["counts"], 13, 21).astype(bool)
        rebuilt[part] = entry["index"]
        covered += part
    assert (covered == 1).all()
    assert np.array_equal(rebuilt, json_mask)


async def test_overlay_format_is_an_rgb_png_of_the_upload_size(client):
    r = await post(client, png_bytes(50, 20), fmt="overlay")
    im = Image.open(io.BytesIO(r.content))
    assert r.status_code == 200 and im.mode == "RGB" and im.size == (50, 20)


async def test_unknown_format_is_422(client):
    r = await post(client, png_bytes(), fmt="gif")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("size", [(1, 1), (600, 7), (7, 600), (17, 33)])
async def test_mask_has_the_upload_size_for_odd_sizes(client, size):
    body = (await post(client, png_bytes(*size))).json()
    assert mask_from_json(body).shape == (size[1], size[0])


async def test_exif_orientation_is_applied_before_segmentation(client):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    im.save(buffer, format="JPEG", exif=exif)
    body = (await post(client, buffer.getvalue(), name="x.jpg")).json()
    assert (body["width"], body["height"]) == (20, 40)
    assert mask_from_json(body).shape == (40, 20)


@pytest.mark.parametrize("mode", ["P", "L", "LA", "RGBA", "CMYK", "1"])
async def test_every_image_mode_is_accepted(client, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    r = await post(client, png_bytes(16, 12, mode=mode, fmt=fmt))
    assert r.status_code == 200, r.text


def test_sixteen_bit_images_are_scaled_not_clipped():
    from app.decode import DecodeLimits, decode_image

    array = np.array([[0, 32768, 65535]], np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    rgb = decode_image(buffer.getvalue(), DecodeLimits(100, 100))
    assert rgb.shape == (1, 3, 3)
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


async def test_animated_gif_uses_the_first_frame(client):
    frames = [Image.new("RGB", (12, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    from app.decode import DecodeLimits, decode_image

    rgb = decode_image(buffer.getvalue(), DecodeLimits(1000, 100))
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50
    assert (await post(client, buffer.getvalue(), name="a.gif")).status_code == 200


async def test_batch_endpoint_returns_results_in_order_with_per_item_errors(client):
    files = [("file", ("a.png", png_bytes(10, 8), "image/png")),
             ("file", ("bad.png", b"not an image", "image/png")),
             ("file", ("c.png", png_bytes(12, 9), "image/png"))]
    r = await client.post("/segment/batch", files=files)
    assert r.status_code == 200
    items = r.json()
    assert [i["filename"] for i in items] == ["a.png", "bad.png", "c.png"]
    assert items[0]["result"]["width"] == 10 and items[2]["result"]["width"] == 12
    assert items[1]["error"]["code"] == "invalid_image" and items[1].get("result") is None


async def test_batch_endpoint_limits_file_count(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_files=2))
    async with running_client(app) as client:
        files = [("file", (f"{i}.png", png_bytes(4, 4), "image/png")) for i in range(3)]
        r = await client.post("/segment/batch", files=files)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_files"


async def test_images_larger_than_a_tile_are_segmented_by_tiling(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, tile_size=32, tile_overlap=8))
    async with running_client(app) as client:
        body = (await post(client, png_bytes(100, 70))).json()
        metrics = (await client.get("/metrics")).text
    assert mask_from_json(body).shape == (70, 100)
    # 100×70 over 32-px tiles with stride 24 pads to 104×80: a non-zero padding ratio was seen.
    assert metric_value(metrics, "deconvseg_padding_ratio_sum") == pytest.approx(
        1 - 100 * 70 / (104 * 80), rel=1e-3)


async def test_resize_policy_returns_mask_at_upload_size(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, resolution="resize", resize_to=16))
    async with running_client(app) as client:
        body = (await post(client, png_bytes(64, 48))).json()
    assert mask_from_json(body).shape == (48, 64)


async def test_concurrent_requests_batch_and_match_sequential_results(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_batch_size=8, max_batch_delay_ms=200))
    images = [png_bytes(24, 24, seed=i) for i in range(8)]
    async with running_client(app) as client:
        sequential = [mask_from_json((await post(client, im)).json()) for im in images]
        before = (await client.get("/metrics")).text
        responses = await asyncio.gather(*(post(client, im) for im in images))
        after = (await client.get("/metrics")).text
    for r, expected in zip(responses, sequential, strict=True):
        assert np.array_equal(mask_from_json(r.json()), expected)
    assert batches_over_one(after) > batches_over_one(before)


def metric_value(metrics_text, name):
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def batches_over_one(metrics_text):
    count = total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith('deconvseg_batch_size_bucket{le="1.0"}'):
            count = float(line.split()[-1])
        if line.startswith("deconvseg_batch_size_count"):
            total = float(line.split()[-1])
    return total - count
