import re

from pydantic import SecretStr

from app.main import create_app
from tests.support.service import make_settings, running_client


async def test_demo_page_is_html_that_loads_only_its_own_assets(client):
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    linked = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert "static/demo.js" in linked and "static/demo.css" in linked
    assert not [url for url in linked if "//" in url], linked  # no CDN, works offline
    for url in ("static/demo.js", "static/demo.css"):
        asset = await client.get("/" + url)
        assert asset.status_code == 200 and asset.content


async def test_assets_have_their_media_types(client):
    assert (await client.get("/static/demo.js")).headers["content-type"].startswith(
        "text/javascript")
    assert (await client.get("/static/demo.css")).headers["content-type"].startswith("text/css")


async def test_only_the_listed_assets_are_served(client):
    for name in ("index.html", "..%2Fmain.py", "nope.js"):
        r = await client.get(f"/static/{name}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_page_stays_out_of_the_openapi_schema_but_docs_link_it(client):
    spec = (await client.get("/openapi.json")).json()
    assert "/" not in spec["paths"] and "/static/{name}" not in spec["paths"]
    assert "[`/`](/)" in spec["info"]["description"]
    assert (await client.get("/docs")).status_code == 200


async def test_page_and_assets_are_open_when_the_api_needs_a_key(tiny_checkpoint):
    app = create_app(make_settings(tiny_checkpoint, api_key=SecretStr("s3cret")))
    async with running_client(app) as client:
        assert (await client.get("/model")).status_code == 401
        for path in ("/", "/static/demo.js", "/static/demo.css"):
            assert (await client.get(path)).status_code == 200, path
