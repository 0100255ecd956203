"""GET /metrics: Prometheus text exposition of the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.auth import APIKey
from app.schemas import error_responses

router = APIRouter(tags=["service"])


@router.get("/metrics", dependencies=[APIKey], response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, **error_responses(401)})
async def metrics(request: Request) -> Response:
    """Requests by route and status, stage latencies, batch sizes, queue depth, padding."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
