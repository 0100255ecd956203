"""FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import APIError
from app.service import Service


def get_service(request: Request) -> Service:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise APIError(503, "not_ready", "the model is still loading; retry shortly",
                       {"Retry-After": "1"})
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
