"""GET /models (every model, its versions and their states), GET /models/{name} and GET /model
(a model's card: its serving version and how the server feeds it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path

from app.auth import APIKey
from app.deps import RegistryDep, RuntimeDep
from app.formats import ALLOWED_FORMATS
from app.pipeline import ModelVersion
from app.runtime import Runtime
from app.schemas import ModelCard, ModelStatus, error_responses
from model.net import count_parameters

router = APIRouter(tags=["models"], dependencies=[APIKey])
ModelName = Annotated[str, Path(description="a model in the repository")]


def card(version: ModelVersion, runtime: Runtime) -> ModelCard:
    """Name, version, classes, palette, normalisation, input policy, training, metrics and
    batching of one loaded version."""
    ckpt, o, s = version.ckpt, version.options, runtime.settings
    return ModelCard(
        name=version.name, version=version.number, sha256=ckpt.sha256, classes=ckpt.classes,
        palette=ckpt.palette, normalization={"mean": ckpt.mean, "std": ckpt.std},
        input_policy={"formats": list(ALLOWED_FORMATS), "resolution": o.resolution,
                      "resize_long_side": ckpt.train_size if o.resolution == "resize" else None,
                      "tile_size": o.tile_size, "tile_overlap": o.tile_overlap,
                      "max_upload_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels,
                      "max_batch_files": s.max_batch_files},
        train_size=ckpt.train_size, object_scale=ckpt.object_scale, metrics=ckpt.metrics,
        training={k: v for k, v in ckpt.training.items() if k != "history"},
        architecture={**asdict(ckpt.config), "parameters": count_parameters(ckpt.model)},
        batching={"max_batch_size": o.max_batch_size, "max_batch_delay_ms": o.max_batch_delay_ms,
                  "max_queue": s.max_queue, "request_timeout_s": s.request_timeout_s,
                  "forward": "stacked" if version.segmenter.options.stacked else "per_item",
                  "workers": runtime.policy.workers, "threads": runtime.policy.threads},
        versions=ckpt.versions, device=str(version.segmenter.device),
        backend=version.segmenter.options.backend, engine=version.segmenter.options.engine,
    )


@router.get("/models", response_model=list[ModelStatus], responses=error_responses(401))
async def list_models(registry: RegistryDep) -> list[ModelStatus]:
    """Every model in the repository, its serving version and each version's state."""
    return [ModelStatus(**registry.status(name)) for name in registry.names()]


@router.get("/models/{name}", response_model=ModelCard, responses=error_responses(401, 404, 503))
async def model_card(name: ModelName, registry: RegistryDep, runtime: RuntimeDep) -> ModelCard:
    """The named model's card, for its serving version."""
    with registry.lease(name) as version:
        return card(version, runtime)


@router.get("/model", response_model=ModelCard, responses=error_responses(401, 404, 503))
async def default_model_card(registry: RegistryDep, runtime: RuntimeDep) -> ModelCard:
    """The default model's card (DECONVSEG_DEFAULT_MODEL), for its serving version."""
    with registry.lease() as version:
        return card(version, runtime)
