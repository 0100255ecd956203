"""GET /model, /healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.auth import APIKey
from app.decode import ALLOWED_FORMATS
from app.deps import ServiceDep
from app.schemas import ErrorResponse, Health, ModelCard
from model.net import count_parameters

router = APIRouter(tags=["service"])
NOT_READY = {503: {"model": ErrorResponse, "description": "not ready (warming up or draining)"}}
UNAUTHORIZED = {401: {"model": ErrorResponse, "description": "API key missing or wrong"}}


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process is up and serving HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=NOT_READY)
async def readyz(request: Request) -> Response:
    """Readiness: the model is loaded, warm, and the worker is running (503 otherwise)."""
    service = getattr(request.app.state, "service", None)
    if service is None or not service.ready:
        state = "draining" if service is not None and service.draining else "not ready"
        return JSONResponse({"error": {"code": "not_ready", "message": f"the service is {state}"}},
                            status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready"})


@router.get("/model", response_model=ModelCard, dependencies=[APIKey],
            responses={**NOT_READY, **UNAUTHORIZED})
async def model_card(service: ServiceDep) -> dict[str, Any]:
    """The served checkpoint: classes, palette, normalisation, input policy, metrics, batching."""
    ckpt, s = service.ckpt, service.settings
    return {
        "name": ckpt.name, "sha256": ckpt.sha256, "classes": ckpt.classes,
        "palette": ckpt.palette, "normalization": {"mean": ckpt.mean, "std": ckpt.std},
        "input_policy": {"formats": list(ALLOWED_FORMATS), "resolution": s.resolution,
                         "resize_to": s.resize_to if s.resolution == "resize" else None,
                         "tile_size": s.tile_size, "tile_overlap": s.tile_overlap,
                         "max_upload_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels,
                         "max_side": s.max_side},
        "train_size": ckpt.train_size, "object_scale": ckpt.object_scale,
        "metrics": ckpt.metrics,
        "training": {k: v for k, v in ckpt.training.items() if k != "history"},
        "architecture": {"config": {"in_channels": ckpt.config.in_channels,
                                    "num_classes": ckpt.config.num_classes,
                                    "widths": ckpt.config.widths,
                                    "convs_per_stage": ckpt.config.convs_per_stage},
                         "parameters": count_parameters(ckpt.model)},
        "batching": {"max_batch_size": s.max_batch_size,
                     "max_batch_delay_ms": s.max_batch_delay_ms, "max_queue": s.max_queue,
                     "request_timeout_s": s.request_timeout_s},
        "versions": ckpt.versions, "device": str(service.device),
    }


@router.get("/metrics", dependencies=[APIKey], responses=UNAUTHORIZED,
            response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
