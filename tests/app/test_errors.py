import pytest

from app.main import create_app
from tests.support.service import image_bytes, make_settings, post_image, running_client


def assert_error(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    return error["message"]


@pytest.mark.parametrize("data,code", [
    (b"", "empty_file"),
    (b"hello, this is text", "invalid_image"),
    (image_bytes(32, 32)[:60], "invalid_image"),
    (image_bytes(32, 32, fmt="JPEG")[:300], "invalid_image"),
])
async def test_empty_corrupt_or_truncated_upload_is_400(client, data, code):
    assert_error(await post_image(client, data), 400, code)


async def test_tiff_is_415_and_lists_the_accepted_formats(client):
    message = assert_error(await post_image(client, image_bytes(8, 8, fmt="TIFF"), name="x.tif"),
                           415, "unsupported_format")
    assert "TIFF" in message and "JPEG, PNG, WebP, BMP or GIF" in message


async def test_too_many_pixels_is_413_and_names_the_limit(client):
    message = assert_error(await post_image(client, image_bytes(500, 500)), 413,
                           "too_many_pixels")
    assert "500×500" in message and "200,000" in message


async def test_declared_content_length_over_the_limit_is_413_before_reading(client):
    r = await client.post("/segment", content=b"x" * 10,
                          headers={"content-length": "99999999",
                                   "content-type": "multipart/form-data; boundary=x"})
    message = assert_error(r, 413, "payload_too_large")
    assert "99,999,999 bytes" in message and "2,000,000" in message


async def test_chunked_body_over_the_limit_is_413(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, max_upload_bytes=50_000))

    async def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(100):
            yield b"\0" * 10_000

    async with running_client(app) as client:
        r = await client.post("/segment", content=chunks(),
                              headers={"content-type": "multipart/form-data; boundary=x"})
        assert_error(r, 413, "payload_too_large")
        assert (await post_image(client, image_bytes())).status_code == 200


async def test_missing_file_field_is_422_and_names_the_field(client):
    r = await client.post("/segment", files={"image": ("x.png", image_bytes(), "image/png")})
    assert "'file'" in assert_error(r, 422, "invalid_request")


async def test_json_body_and_unknown_format_are_422(client):
    assert_error(await client.post("/segment", json={"file": "abc"}), 422, "invalid_request")
    assert_error(await post_image(client, image_bytes(), fmt="gif"), 422, "invalid_request")


async def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    assert_error(await client.get("/nope"), 404, "not_found")
    r = await client.get("/segment")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"


async def test_api_key_is_required_on_api_routes_when_configured(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, api_key="s3cret"))
    async with running_client(app) as client:
        missing = await post_image(client, image_bytes())
        wrong = await post_image(client, image_bytes(), headers={"X-API-Key": "nope"})
        bearer = await post_image(client, image_bytes(),
                                  headers={"Authorization": "Bearer s3cret"})
        header = await post_image(client, image_bytes(), headers={"X-API-Key": "s3cret"})
        model, metrics = await client.get("/model"), await client.get("/metrics")
        health, ready = await client.get("/healthz"), await client.get("/readyz")
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_error(wrong, 401, "unauthorized")
    assert bearer.status_code == 200 and header.status_code == 200
    assert model.status_code == 401 and metrics.status_code == 401
    assert health.status_code == 200 and ready.status_code == 200


async def test_the_schema_describes_both_ways_of_sending_each_key(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, api_key="k", admin_key="a"))
    async with running_client(app) as client:
        schemes = (await client.get("/openapi.json", headers={"X-API-Key": "k"})).json()[
            "components"]["securitySchemes"]
    assert schemes == {
        "APIKeyBearer": {"type": "http", "scheme": "bearer",
                         "description": "DECONVSEG_API_KEY as a bearer token"},
        "APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                         "description": "DECONVSEG_API_KEY in the X-API-Key header"},
        "AdminKeyBearer": {"type": "http", "scheme": "bearer",
                           "description": "DECONVSEG_ADMIN_KEY as a bearer token"},
        "AdminKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Admin-Key",
                           "description": "DECONVSEG_ADMIN_KEY in the X-Admin-Key header"}}


@pytest.mark.parametrize(("api_key", "admin_key"), [("k", None), (None, "a")])
async def test_each_key_guards_its_own_routes_in_the_schema_and_at_the_door(tiny_checkpoint,
                                                                           api_key, admin_key):
    app = create_app(make_settings(tiny_checkpoint, api_key=api_key, admin_key=admin_key))
    async with running_client(app) as client:
        headers = {"X-API-Key": api_key} if api_key else {}
        paths = (await client.get("/openapi.json", headers=headers)).json()["paths"]
        segment = paths["/segment"]["post"].get("security")
        index = paths.get("/v2/repository/index", {}).get("post", {}).get("security")
        upload = await post_image(client, image_bytes(8, 8))
        control = await client.post("/v2/repository/index")
    if api_key:
        assert segment == [{"APIKeyBearer": []}, {"APIKeyHeader": []}] and index is None
        assert upload.status_code == 401 and control.status_code == 404  # no admin key: no route
    else:
        assert segment is None
        assert index == [{"AdminKeyBearer": []}, {"AdminKeyHeader": []}]
        assert upload.status_code == 200 and control.status_code == 401


@pytest.mark.parametrize(("authorization", "status"), [
    ("Bearer k", 200), ("bearer k", 200), ("BEARER   k", 200), ("Basic k", 401),
    ("Token k", 401), ("Bearer wrong k", 401), ("Bearer", 401), ("k", 401)])
async def test_only_a_bearer_token_equal_to_the_key_passes(tiny_checkpoint, authorization,
                                                           status):
    app = create_app(make_settings(tiny_checkpoint, api_key="k"))
    async with running_client(app) as client:
        r = await post_image(client, image_bytes(8, 8), headers={"Authorization": authorization})
    assert r.status_code == status
