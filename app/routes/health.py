"""GET /healthz (liveness) and GET /readyz (readiness); both open without an API key."""

from __future__ import annotations

from fastapi import APIRouter

from app import errors
from app.deps import RegistryDep, RuntimeDep
from app.schemas import Health, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process is up and serving HTTP."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=error_responses(503))
async def readyz(runtime: RuntimeDep, registry: RegistryDep) -> Health:
    """Readiness: 200 once start-up loading and warm-up are done and the default model has a
    serving version; 503 before that, while draining, and once an inference worker has died
    (the process then exits with status 3)."""
    if not runtime.admission.ready:
        raise errors.not_ready(runtime.admission.state)
    with registry.lease():  # raises model_not_ready when the default model cannot serve
        return Health(status="ready")
