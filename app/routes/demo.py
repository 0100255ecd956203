"""GET /: the browser demo page and its two assets; the page calls the public API like any client.

The page is left out of the OpenAPI schema (it is not an API); the app description links it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"demo.css": "text/css", "demo.js": "text/javascript"}
# Everything the page loads comes from this server: no CDN, works offline.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                           "object-src 'none'; base-uri 'none'; "
                                           "frame-ancestors 'none'"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def demo_page() -> FileResponse:
    """The demo page: choose an image, see the mask overlay, class areas and latency."""
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/static/{name}")
async def demo_asset(name: str) -> FileResponse:
    """The page's stylesheet and script; nothing else under /static is served."""
    if name not in ASSETS:
        raise NotFound("not_found", f"no static file '{name}'; the demo page is at /")
    return FileResponse(STATIC / name, media_type=ASSETS[name])
