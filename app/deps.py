"""FastAPI dependencies shared by the routers: the objects the lifespan builds. They are
`async def`: FastAPI runs a plain `def` dependency in its thread pool (two thread hops per
request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.registry import Registry
from app.runtime import Runtime
from app.settings import Settings


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_app_settings(request: Request) -> Settings:
    """The settings this app was built with."""
    return request.app.state.settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
