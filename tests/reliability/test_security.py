"""API key before the body, the key kept out of logs, CORS off unless configured."""

import secrets

import httpx
import pytest

from app.auth import protected_paths
from app.main import create_app
from tests.reliability.corpus import file_part
from tests.support.server import start_server, stop
from tests.support.service import image_bytes, make_settings, post_image, running_client


async def test_unauthenticated_upload_is_refused_before_its_body_is_read(tiny_checkpoint):
    pulled = 0

    async def body():
        nonlocal pulled
        for part in (b"--x\r\n" + file_part(image_bytes(), "x.png"), b"\0" * 1_000_000):
            pulled += len(part)
            yield part

    app = create_app(make_settings(tiny_checkpoint, api_key="s3cret"))
    async with running_client(app) as client:
        r = await client.post("/segment", content=body(),
                              headers={"content-type": "multipart/form-data; boundary=x",
                                       "authorization": "Basic s3cret"})
        metrics = (await client.get("/metrics", headers={"x-api-key": "s3cret"})).text
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == 'Bearer realm="deconvseg"'
    assert pulled == 0
    assert 'deconvseg_requests_total{route="/segment",status="401"} 1.0' in metrics


@pytest.mark.slow
def test_api_key_never_appears_in_the_logs(tiny_checkpoint, tmp_path):
    key, wrong = f"key-{secrets.token_hex(8)}", f"wrong-{secrets.token_hex(8)}"
    log = tmp_path / "server.log"
    proc, base = start_server({"DECONVSEG_CHECKPOINT": str(tiny_checkpoint),
                               "DECONVSEG_THREADS": "1", "DECONVSEG_DEVICE": "cpu",
                               "DECONVSEG_API_KEY": key, "DECONVSEG_LOG_LEVEL": "debug"}, log=log)
    try:
        files = {"file": ("x.png", image_bytes(), "image/png")}
        statuses = [
            httpx.post(f"{base}/segment", files=files, headers={"authorization": f"Bearer {key}"},
                       timeout=30).status_code,
            httpx.post(f"{base}/segment", files=files, headers={"x-api-key": key},
                       timeout=30).status_code,
            httpx.post(f"{base}/segment", files={"file": ("x.png", b"junk", "image/png")},
                       headers={"x-api-key": key}, timeout=30).status_code,
            httpx.post(f"{base}/segment", files=files, headers={"x-api-key": wrong},
                       timeout=30).status_code,
            httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {wrong}"},
                      timeout=30).status_code,
        ]
    finally:
        code = stop(proc)
    text = log.read_text()
    assert statuses == [200, 200, 400, 401, 401] and code == 0
    assert '"POST /segment HTTP/1.1" 401' in text  # access logs were on
    assert key not in text and wrong not in text


async def test_cors_is_off_unless_configured(client):
    preflight = await client.options("/segment", headers={
        "origin": "https://elsewhere.example", "access-control-request-method": "POST"})
    simple = await client.get("/healthz", headers={"origin": "https://elsewhere.example"})
    assert preflight.status_code == 405
    for r in (preflight, simple):
        assert not any(h.startswith("access-control-") for h in r.headers)


async def test_cors_allows_only_the_configured_origins(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, cors_origins=["https://app.example"]))
    async with running_client(app) as client:
        allowed = await client.options("/segment", headers={
            "origin": "https://app.example", "access-control-request-method": "POST"})
        other = await client.options("/segment", headers={
            "origin": "https://elsewhere.example", "access-control-request-method": "POST"})
        upload = await post_image(client, image_bytes(), headers={"origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert upload.headers["access-control-allow-origin"] == "https://app.example"


def test_the_key_guards_exactly_the_api_routes(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, api_key="s3cret"))
    assert set(protected_paths(app.openapi())) == {
        "/segment", "/segment/batch", "/model", "/metrics", "/models", "/models/{name}",
        "/models/{name}/segment", "/models/{name}/segment/batch",
        "/models/{name}/versions/{version}/segment",
        "/models/{name}/versions/{version}/segment/batch",
        "/v2/models/{name}", "/v2/models/{name}/versions/{version}", "/v2/models/{name}/ready",
        "/v2/models/{name}/versions/{version}/ready", "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer"}


@pytest.mark.parametrize(("keys", "schemes"), [
    ({}, set()),
    ({"api_key": "s3cret"}, {"APIKeyBearer", "APIKeyHeader"}),
    ({"admin_key": "adm1n"}, {"AdminKeyBearer", "AdminKeyHeader"}),
])
def test_the_schema_asks_only_for_the_keys_that_are_set(tiny_checkpoint, keys, schemes):
    spec = create_app(make_settings(tiny_checkpoint, **keys)).openapi()
    operations = [op for item in spec["paths"].values() for op in item.values()]
    required = {scheme for op in operations for req in op.get("security", []) for scheme in req}
    assert set(spec["components"].get("securitySchemes", {})) == required == schemes
    assert all("401" not in op["responses"] for op in operations if "security" not in op)
    assert ("401" in spec["paths"]["/segment"]["post"]["responses"]) == ("api_key" in keys)
