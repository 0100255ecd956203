"""The FastAPI application: `create_app()`; the model loads in the lifespan, then warms up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.auth import ApiKeyMiddleware
from app.decode import configure_pillow
from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, LoadShedMiddleware, RequestMetricsMiddleware
from app.routes import demo, health, metrics, model_card, segment
from app.service import Service
from app.settings import Settings, get_settings
from model.checkpoint import Checkpoint

log = logging.getLogger("deconvseg")

DESCRIPTION = """Upload an image, get a per-pixel class mask.

`POST /segment` takes the multipart field `file` (JPEG, PNG, WebP, BMP or GIF) and returns the
mask as JSON (default), a palette PNG, COCO RLE, or an overlay for people (`?format=`).
`POST /segment/batch` takes several `file` parts. Every error is
`{"error": {"code": "...", "message": "..."}}`.

A browser demo page that uses this API is served at [`/`](/).
"""


def create_app(settings: Settings | None = None, checkpoint: Checkpoint | None = None,
               service_factory: type[Service] = Service) -> FastAPI:
    """Build the app. `checkpoint` skips loading (`python -m app` loads it before binding)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_pillow(settings.max_pixels)
        # A bad checkpoint fails start-up here; warm-up runs after, /readyz is 503 until it ends.
        service = await asyncio.to_thread(service_factory, settings, checkpoint,
                                          app.state.metrics)
        app.state.service = service
        app.state.warm_up = asyncio.create_task(asyncio.to_thread(service.start))
        try:
            yield
        finally:
            service.draining = True
            await asyncio.gather(app.state.warm_up, return_exceptions=True)
            log.info("draining: finishing queued images")
            await service.stop()
            log.info("stopped")

    app = FastAPI(title="deconvseg", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.service = None
    install_error_handlers(app)
    for router in (segment.router, model_card.router, health.router, metrics.router,
                   demo.router):
        app.include_router(router)
    # Last added is outermost: CORS headers on every response, metrics see the 401s and 413s.
    app.add_middleware(LoadShedMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key, openapi=app.openapi)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app
