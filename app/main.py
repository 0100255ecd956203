"""The FastAPI application: `create_app()` with the model loaded in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.errors import install_error_handlers
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, RequestMetricsMiddleware
from app.routes import info, segment
from app.service import Service
from app.settings import Settings, get_settings
from model.checkpoint import Checkpoint

log = logging.getLogger("deconvseg")

DESCRIPTION = """Upload an image, get a per-pixel class mask.

`POST /segment` takes a multipart field `file` (JPEG, PNG, WebP, BMP or GIF) and returns the mask
as JSON (default), a palette PNG, COCO RLE, or an overlay for people (`?format=`). Errors are
always `{"error": {"code", "message"}}`.
"""


def create_app(settings: Settings | None = None, checkpoint: Checkpoint | None = None,
               service_factory=Service) -> FastAPI:
    """Build the app; the model loads in the lifespan and warms up, then /readyz turns 200."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A bad checkpoint fails start-up here; warm-up runs after, with /readyz at 503 until then.
        service = await asyncio.to_thread(service_factory, settings, checkpoint,
                                          app.state.metrics)
        app.state.service = service
        warm_up = asyncio.create_task(asyncio.to_thread(service.start))
        try:
            yield
        finally:
            service.draining = True
            await asyncio.gather(warm_up, return_exceptions=True)
            log.info("draining: finishing queued images")
            await asyncio.to_thread(service.stop)
            log.info("stopped")

    app = FastAPI(title="deconvseg", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.service = None
    install_error_handlers(app)
    app.include_router(segment.router)
    app.include_router(info.router)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    return app
