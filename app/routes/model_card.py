"""GET /model: the served checkpoint and how the service feeds it."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from app.auth import APIKey
from app.decode import ALLOWED_FORMATS
from app.deps import ServiceDep
from app.schemas import ModelCard, error_responses
from model.net import count_parameters

router = APIRouter(tags=["service"])


@router.get("/model", response_model=ModelCard, dependencies=[APIKey],
            responses=error_responses(401, 503))
async def model_card(service: ServiceDep) -> ModelCard:
    """Name, classes, palette, normalisation, input policy, training, metrics and batching."""
    ckpt, s = service.ckpt, service.settings
    return ModelCard(
        name=ckpt.name, sha256=ckpt.sha256, classes=ckpt.classes, palette=ckpt.palette,
        normalization={"mean": ckpt.mean, "std": ckpt.std},
        input_policy={"formats": list(ALLOWED_FORMATS), "resolution": s.resolution,
                      "resize_long_side": ckpt.train_size if s.resolution == "resize" else None,
                      "tile_size": s.tile_size, "tile_overlap": s.tile_overlap,
                      "max_upload_bytes": s.max_upload_bytes, "max_pixels": s.max_pixels,
                      "max_batch_files": s.max_batch_files},
        train_size=ckpt.train_size, object_scale=ckpt.object_scale, metrics=ckpt.metrics,
        training={k: v for k, v in ckpt.training.items() if k != "history"},
        architecture={**asdict(ckpt.config), "parameters": count_parameters(ckpt.model)},
        batching={"max_batch_size": s.max_batch_size, "max_batch_delay_ms": s.max_batch_delay_ms,
                  "max_queue": s.max_queue, "request_timeout_s": s.request_timeout_s,
                  "forward": "stacked" if service.segmenter.options.stacked else "per_item",
                  "workers": service.batcher.workers, "threads": service.threads},
        versions=ckpt.versions, device=str(service.device),
        backend=service.segmenter.options.backend, engine=service.segmenter.options.engine,
    )
