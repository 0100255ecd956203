"""Every service setting, read from DECONVSEG_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DECONVSEG_", extra="ignore")

    checkpoint: Path = Field(Path("weights/model.pt"), description="checkpoint file to serve")
    checkpoint_sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="refuse a checkpoint with another sha256")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=1, le=65535)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda if present")
    threads: int = Field(0, ge=0, le=256, description="torch intra-op threads; 0 = all cores")
    io_threads: int = Field(2, ge=1, le=64, description="threads for decode and encode")
    max_batch_size: int = Field(8, ge=1, le=256)
    max_batch_delay_ms: float = Field(5.0, ge=0, le=10_000)
    max_queue: int = Field(64, ge=1, le=100_000, description="queued images before 503")
    request_timeout_s: float = Field(30.0, gt=0, le=3600)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(40_000_000, ge=1, description="largest width × height accepted")
    max_side: int = Field(16_384, ge=1, description="largest width or height accepted")
    max_files: int = Field(16, ge=1, le=1000, description="files per /segment/batch request")
    resolution: Literal["native", "resize"] = Field(
        "native", description="native: infer at upload size (tiled above tile_size); "
        "resize: infer with the long side scaled to resize_to")
    resize_to: int = Field(512, ge=16, le=8192)
    tile_size: int = Field(512, ge=32, le=8192)
    tile_overlap: int = Field(64, ge=0)
    tile_batch_size: int = Field(4, ge=1, le=256)
    api_key: SecretStr | None = Field(None, description="require Bearer / X-API-Key if set")
    cors_origins: list[str] = Field(default_factory=list)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    shutdown_timeout_s: float = Field(20.0, gt=0, le=600, description="graceful drain limit")

    @model_validator(mode="after")
    def _check_tiles(self) -> Settings:
        if self.tile_overlap >= self.tile_size:
            raise ValueError(
                f"DECONVSEG_TILE_OVERLAP ({self.tile_overlap}) must be smaller than "
                f"DECONVSEG_TILE_SIZE ({self.tile_size})")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()


def describe_validation_error(exc: Exception) -> str:
    """One line naming each invalid DECONVSEG_* setting and why."""
    errors = getattr(exc, "errors", lambda: [])()
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "__root__"]
        name = f"DECONVSEG_{loc[0].upper()}" if loc else "settings"
        parts.append(f"{name}: {err.get('msg', 'invalid')} (got {err.get('input')!r})"
                     if loc else f"{err.get('msg')}")
    return "invalid setting " + "; ".join(parts) if parts else f"invalid settings: {exc}"
