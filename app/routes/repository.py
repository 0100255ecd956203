"""Model control, after Triton's model-repository extension; mounted only when
DECONVSEG_ADMIN_KEY is set, and every route requires that key (checked before any body is
read)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path

from app.auth import AdminKey
from app.deps import RegistryDep
from app.schemas import IndexEntry, ModelStatus, error_responses

router = APIRouter(prefix="/v2/repository", tags=["model control"], dependencies=[AdminKey])
ModelName = Annotated[str, Path(description="a model folder in the repository")]


@router.post("/index", response_model=list[IndexEntry], responses=error_responses(401))
async def repository_index(registry: RegistryDep) -> list[dict[str, Any]]:
    """Every version of every model with its state (and why, when it is not ready)."""
    return registry.index()


@router.post("/models/{name}/load", response_model=ModelStatus,
             responses=error_responses(400, 401, 404, 409, 503))
async def load_model(name: ModelName, registry: RegistryDep) -> ModelStatus:
    """Re-read the model's folder and load the versions its policy names, while the serving
    version keeps serving; returns once they serve (the old ones drain, then unload), or 400
    with the reason and the old version still serving."""
    return ModelStatus(**await asyncio.to_thread(registry.load, name))


@router.post("/models/{name}/unload", response_model=ModelStatus,
             responses=error_responses(401, 404, 409))
async def unload_model(name: ModelName, registry: RegistryDep) -> ModelStatus:
    """Stop routing to the model; each version is freed once its admitted requests end."""
    return ModelStatus(**await asyncio.to_thread(registry.unload, name))
