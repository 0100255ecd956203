"""Every service setting, read once from `DECONVSEG_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Images with a side over TILE_SIZE run as tiles (model/tiling.py). 768, not 512: smaller tiles
# compute more pixels twice in their overlaps (27 % more at 1920×1080 with 512), which put the
# cost per pixel of 1080p over the 256² image's (README, "Cost per pixel at photo sizes").
TILE_SIZE, TILE_OVERLAP = 768, 64

ENV_PREFIX = "DECONVSEG_"


class Settings(BaseSettings):
    """Service configuration; an invalid value fails start-up with the variable's name."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    checkpoint: Path = Field(Path("weights/model.pt"), description="checkpoint file to serve "
                             "as a one-model repository (model = the file's stem, version 1); "
                             "ignored when MODEL_REPOSITORY is set")
    pinned_sha256: str | None = Field(
        None, description="refuse to start unless the checkpoint has this sha256"
    )
    model_repository: Path | None = Field(
        None, description="folder of <model>/<version>/model.pt (+ optional <model>/config.json)")
    default_model: str | None = Field(
        None, description="the model /segment and /model use; unset = the only model, else the "
        "first by name")
    max_loaded_versions: int = Field(
        4, ge=1, le=256, description="model versions held in memory at once (loading, serving "
        "or draining); loads beyond it are refused with 409")
    admin_key: SecretStr | None = Field(
        None, description="enables the model-control routes (/v2/repository/...) and guards "
        "them; sent as 'Authorization: Bearer <key>' or 'X-Admin-Key'")
    host: str = Field("127.0.0.1", min_length=1, description="interface to listen on")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = cuda when available, else cpu"
    )
    threads: int | None = Field(
        None, ge=1, le=1024, description="torch threads for inference; unset = all cores"
    )
    workers: int | None = Field(
        None, ge=1, le=64, description="inference threads taking images from the queue; unset "
        "= one per torch thread (at most 4) on cpu, 1 on cuda. Busy workers share THREADS; "
        "one computing alone uses all of them")
    worker_nice: int = Field(
        0, ge=0, le=19, description="the inference threads' nice value above the process's: "
        "the event loop and I/O threads, whose work per request is short, come first on a "
        "contended core (0 = the same priority)")
    io_threads: int | None = Field(
        None, ge=1, le=256, description="decode/encode threads; unset = max(1, cores // 4)"
    )
    max_batch_size: int = Field(8, ge=1, le=256, description="images per forward pass")
    max_batch_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="how long a batch waits for companions after its first"
    )
    max_queue: int = Field(64, ge=1, le=100_000, description="queued images before 503")
    refusal_pace_ms: float = Field(
        20.0, ge=0, le=1000, description="a 503 queue_full is answered after this long, so "
        "that a flood of clients retrying at once spends fewer cores on refusals")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="deadline per request")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1, description="largest request body in bytes (all files together)"
    )
    max_pixels: int = Field(40_000_000, ge=1, description="largest image, width × height")
    max_side: int = Field(16384, ge=1, description="longest image side in pixels")
    max_probability_pixels: int = Field(
        4_000_000, ge=1, description="largest image whose per-class probabilities are returned "
        "(they take classes × pixels × 2 bytes)")
    max_batch_files: int = Field(16, ge=1, le=1024, description="files per /segment/batch")
    resolution: Literal["native", "resize"] = Field(
        "native",
        description="native = infer at the image's own size; "
        "resize = long side to the checkpoint's train_size, logits resized back",
    )
    tile_size: int = Field(TILE_SIZE, ge=16, le=8192, description="larger images are tiled")
    tile_overlap: int = Field(TILE_OVERLAP, ge=0, description="overlap between tiles, < tile_size")
    batch_forward: Literal["auto", "stacked", "per_item"] = Field(
        "auto",
        description="stacked = one forward per batch; per_item = one forward per image "
        "(bit-identical to a lone request); auto = per_item on cpu, stacked on cuda",
    )
    backend: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="fp32 = float32; bf16 = bfloat16 (weights cast once; autocast when "
        "eager), masks agree with "
        "fp32 on ≥ 99.9 % of pixels (tested); auto = bf16 where the device has native bf16 "
        "(AVX512-BF16/AMX CPUs, recent GPUs), else fp32")
    engine: Literal["torchscript", "eager", "onnxruntime"] = Field(
        "torchscript", description="torchscript = the network scripted and frozen at start-up, "
        "one GIL-free call per forward (same masks as eager in fp32); eager = the nn.Module; "
        "onnxruntime = the network exported to ONNX at start-up and run by ONNX Runtime "
        "(fp32 on cpu only; BACKEND auto means fp32 with it)")
    api_key: SecretStr | None = Field(None, description="if set, required on every API route")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS"
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    drain_report: Path | None = Field(
        None, description="file the server writes its drain summary to as JSON on shutdown")

    @field_validator("pinned_sha256", "api_key", "admin_key", "model_repository",
                     "default_model", "drain_report", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("pinned_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("must be 64 hexadecimal characters (a sha256 digest)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> Settings:
        if self.tile_overlap >= self.tile_size:
            raise ValueError(
                f"DECONVSEG_TILE_OVERLAP={self.tile_overlap} must be smaller than "
                f"DECONVSEG_TILE_SIZE={self.tile_size}"
            )
        return self

    @model_validator(mode="after")
    def _onnxruntime_runs_fp32_on_cpu(self) -> Settings:
        if self.engine == "onnxruntime" and (self.backend == "bf16" or self.device == "cuda"):
            raise ValueError(
                f"DECONVSEG_ENGINE=onnxruntime runs fp32 on cpu only, not "
                f"DECONVSEG_BACKEND={self.backend} with DECONVSEG_DEVICE={self.device}: use "
                f"BACKEND fp32 or auto, DEVICE cpu or auto")
        return self

    @property
    def resolved_io_threads(self) -> int:
        return self.io_threads or max(1, (os.cpu_count() or 1) // 4)

    def resolved_workers(self, device_type: str) -> int:
        if self.workers:
            return self.workers
        # Measured on 2 cores only (2 workers: +18 % served); capped so that many-core machines
        # keep several threads per forward.
        return 1 if device_type == "cuda" else min(self.resolved_threads, 4)

    @property
    def resolved_threads(self) -> int:
        # All cores: decode/encode threads mostly wait on Pillow/zlib with the GIL released, and
        # on 2 cores `cores - io_threads` (= 1) cut served throughput from 25.8 to 19.5 req/s.
        return self.threads or (os.cpu_count() or 1)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each invalid variable, its value and why it was refused."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if field:
            raw = error.get("input")
            secret = field in ("api_key", "admin_key")
            value = "<hidden>" if secret else raw if isinstance(raw, str) else repr(raw)
            parts.append(f"{ENV_PREFIX}{field.upper()}={value}: {message}")
        else:
            parts.append(message)
    return "invalid setting: " + "; ".join(parts)


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
