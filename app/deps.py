"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import APIError
from app.service import Service
from app.settings import Settings


def get_service(request: Request) -> Service:
    """The running service (set by the lifespan)."""
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise APIError(503, "not_ready", "the model is still loading; retry shortly",
                       {"Retry-After": "1"})
    return service


def get_app_settings(request: Request) -> Settings:
    """The settings this app was built with."""
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
