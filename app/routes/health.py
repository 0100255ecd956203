"""GET /healthz (liveness) and GET /readyz (readiness); both open without an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.errors import APIError
from app.schemas import Health, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process is up and serving HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=error_responses(503))
async def readyz(request: Request) -> Health:
    """Readiness: 200 once the model is loaded and warm; 503 before that, while draining, and
    once the inference worker has died (the process then exits with status 3)."""
    service = request.app.state.service
    if service is None or not service.ready:
        state = "warming up" if service is None else service.state
        raise APIError(503, "not_ready", f"the service is {state}", {"Retry-After": "1"})
    return Health(status="ready")
