"""The FastAPI application: `create_app()`; models load in the lifespan, then warm up."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.auth import ADMIN, API, KeyMiddleware, keys_as_configured
from app.decode import configure_pillow
from app.fastpath import SegmentFastPath
from app.formats import ALLOWED_TEXT
from app.inference import resolve_device
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, LoadShedMiddleware, RequestMetricsMiddleware
from app.pipeline import ModelVersion
from app.registry import Registry, VersionFactory
from app.repository import source_for
from app.responses import install_error_handlers
from app.routes import demo, health, metrics, models, repository, segment, v2
from app.runtime import Runtime
from app.settings import Settings, get_settings

log = logging.getLogger("deconvseg")

DESCRIPTION = f"""Upload an image, get a per-pixel class mask.

`POST /segment` takes the multipart field `file` ({ALLOWED_TEXT}) and returns the
mask as JSON (default), a palette PNG, COCO RLE, or an overlay for people (`?format=`).
`POST /segment/batch` takes several `file` parts. `/models/{{name}}/segment` and
`/models/{{name}}/versions/{{version}}/segment` choose the model; `GET /models` lists them.
Every response names the model and version that computed it (`X-Model-Name`,
`X-Model-Version`). Every error is `{{"error": {{"code": "...", "message": "..."}}}}`.

A browser demo page that uses this API is served at [`/`](/).
"""


class SegmentationAPI(FastAPI):
    """FastAPI whose schema describes the server as configured: a key only where it is set
    (`keys_as_configured`; the key middleware reads the protected paths from this same schema)
    and the batch limit."""

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            settings: Settings = self.state.settings
            schema = keys_as_configured(super().openapi(), settings)
            self.openapi_schema = segment.batch_limit_as_configured(schema,
                                                                    settings.max_batch_files)
        return self.openapi_schema


def write_drain_report(path: Path, metrics: Metrics) -> None:
    """The drain summary as JSON: responses by "<route> <status>" and requests dropped before
    compute by reason. Written to a temporary file and renamed, so a reader never sees half."""
    report = {"answered": metrics.answered(), "dropped": metrics.dropped_counts()}
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(json.dumps(report))
        os.replace(partial, path)
    except OSError as exc:
        log.error("could not write the drain report to %s: %s", path, exc)


def build_registry(settings: Settings, metrics: Metrics,
                   factory: VersionFactory = ModelVersion) -> Registry:
    """The registry the settings describe (nothing read yet: call `prepare`)."""
    source = source_for(settings.model_repository, settings.checkpoint, settings.pinned_sha256)
    return Registry(source, settings, metrics, resolve_device(settings.device),
                    settings.resolved_threads, factory)


def create_app(settings: Settings | None = None, registry: Registry | None = None,
               factory: VersionFactory = ModelVersion, fast_path: bool = True) -> FastAPI:
    """Build the app. A `registry` already prepared skips reading the repository at start-up
    (`python -m app` reads it before binding, to fail fast). `fast_path=False` leaves every
    upload to FastAPI (`app.fastpath`; the tests compare the two)."""
    settings = settings or get_settings()
    registry = registry or build_registry(settings, Metrics(), factory)
    runtime = Runtime(settings, registry.metrics, registry.device)

    async def warm_up() -> None:
        await asyncio.to_thread(registry.start)
        # What start-up built mostly lives as long as the server: out of the collector's sight,
        # a full collection (the objects format makes thousands of lists) walks only what
        # requests made. Unloading a model version unfreezes it all (app/registry.py).
        gc.freeze()
        runtime.admission.warm = True
        log.info("ready: %s", ", ".join(f"{v.name} v{v.number}" for v in registry.versions())
                 or "no model can serve")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_pillow(settings.max_pixels)
        if not registry.prepared:
            for problem in await asyncio.to_thread(registry.prepare):
                log.error("%s", problem)
        runtime.start()
        app.state.warm_up = asyncio.create_task(warm_up())
        try:
            yield
        finally:
            runtime.admission.draining = True
            registry.closing = True
            await asyncio.gather(app.state.warm_up, return_exceptions=True)
            log.info("draining: finishing queued images")
            await runtime.stop()
            log.info("drained; responses since start by route and status: %s",
                     registry.metrics.answered())
            if settings.drain_report is not None:
                write_drain_report(settings.drain_report, registry.metrics)

    app = SegmentationAPI(title="deconvseg", version="0.2.0", description=DESCRIPTION,
                          lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = registry.metrics
    app.state.registry = registry
    app.state.runtime = runtime
    install_error_handlers(app)
    routers = [segment.router, models.router, health.router, metrics.router, demo.router,
               v2.router]
    if settings.admin_key is not None:
        routers.append(repository.router)
    for router in routers:
        app.include_router(router)
    # Last added is outermost: CORS headers on every response, metrics see the 401s and 413s.
    if fast_path:
        app.add_middleware(SegmentFastPath, registry=registry, runtime=runtime)
    app.add_middleware(LoadShedMiddleware, check=runtime.admission.check,
                       paths=segment.UPLOAD_PATHS, route_of=segment.upload_route,
                       pace_s=settings.refusal_pace_ms / 1000)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(KeyMiddleware, key=settings.api_key, openapi=app.openapi, kind=API)
    app.add_middleware(KeyMiddleware, key=settings.admin_key, openapi=app.openapi, kind=ADMIN)
    app.add_middleware(RequestMetricsMiddleware, metrics=app.state.metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app
