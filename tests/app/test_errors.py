import io
import zlib

import numpy as np
import pytest
from PIL import Image

from app.main import create_app
from tests.app.conftest import make_settings, png_bytes, running_client


async def post(client, data, name="x.png"):
    return await client.post("/segment", files={"file": (name, data, "image/png")})


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


@pytest.mark.parametrize("data,code", [
    (b"", "empty_file"),
    (b"hello, this is text", "invalid_image"),
    (png_bytes(32, 32)[:60], "invalid_image"),
    (png_bytes(32, 32, fmt="JPEG")[:200], "invalid_image"),
])
async def test_empty_corrupt_or_truncated_upload_is_400(client, data, code):
    assert_error(await post(client, data), 400, code)
    assert (await post(client, png_bytes())).status_code == 200


async def test_tiff_is_415_with_the_allowed_formats(client):
    r = await post(client, png_bytes(8, 8, fmt="TIFF"), name="x.tif")
    assert_error(r, 415, "unsupported_format")
    assert "JPEG" in r.json()["error"]["message"]


async def test_too_many_pixels_is_413_and_names_the_limit(client):
    r = await post(client, png_bytes(500, 500))
    assert_error(r, 413, "too_many_pixels")
    assert "200,000" in r.json()["error"]["message"]


def test_header_claiming_huge_size_is_refused_without_decoding():
    from app.decode import DecodeLimits, decode_image
    from app.errors import APIError

    # A real 1×1 PNG whose IHDR (with a valid CRC) says 20000×20000.
    data = bytearray(png_bytes(1, 1))
    data[16:24] = (20000).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(APIError) as info:
        decode_image(bytes(data), DecodeLimits(40_000_000, 100_000))
    assert info.value.status == 413


async def test_content_length_over_limit_is_413_before_the_body_is_read(client):
    r = await client.post("/segment", content=b"x" * 10,
                          headers={"content-length": "99999999",
                                   "content-type": "multipart/form-data; boundary=x"})
    assert_error(r, 413, "payload_too_large")


async def test_chunked_body_over_limit_is_413(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_upload_bytes=50_000))
    sent = 0

    async def chunks():
        nonlocal sent
        yield b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(100):
            sent += 10_000
            yield b"\0" * 10_000

    async with running_client(app) as client:
        r = await client.post("/segment", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=x"})
        assert_error(r, 413, "payload_too_large")
        assert (await post(client, png_bytes())).status_code == 200


async def test_missing_file_field_is_422_and_says_which_field(client):
    r = await client.post("/segment", files={"image": ("x.png", png_bytes(), "image/png")})
    assert_error(r, 422, "invalid_request")
    assert "'file'" in r.json()["error"]["message"]


async def test_json_body_is_422(client):
    assert_error(await client.post("/segment", json={"file": "abc"}), 422, "invalid_request")


async def test_unknown_route_and_wrong_method_are_json(client):
    assert_error(await client.get("/nope"), 404, "not_found")
    assert_error(await client.get("/segment"), 405, "method_not_allowed")


async def test_api_key_required_when_configured(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, api_key="s3cret"))
    async with running_client(app) as client:
        r = await post(client, png_bytes())
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/model")).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        ok_bearer = await client.post("/segment", headers={"Authorization": "Bearer s3cret"},
                                      files={"file": ("x.png", png_bytes(), "image/png")})
        ok_header = await client.post("/segment", headers={"X-API-Key": "s3cret"},
                                      files={"file": ("x.png", png_bytes(), "image/png")})
        wrong = await client.post("/segment", headers={"X-API-Key": "nope"},
                                  files={"file": ("x.png", png_bytes(), "image/png")})
    assert ok_bearer.status_code == 200 and ok_header.status_code == 200
    assert wrong.status_code == 401


async def test_palette_png_with_transparency_is_accepted(client):
    im = Image.fromarray(np.zeros((5, 5), np.uint8), mode="P")
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", transparency=0)
    assert (await post(client, buffer.getvalue())).status_code == 200


def test_errors_never_reach_the_client_as_500_for_random_bytes():
    from app.decode import DecodeLimits, decode_image
    from app.errors import APIError

    rng = np.random.default_rng(0)
    for i in range(50):
        data = rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        if i % 2:
            data = png_bytes(8, 8)[:16] + data  # a PNG signature followed by junk
        with pytest.raises(APIError) as info:
            decode_image(data, DecodeLimits(1000, 100))
        assert info.value.status in (400, 413, 415)


