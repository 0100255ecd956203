"""`<repository>/<model>/config.json`: per-model settings over the server-wide defaults.

Every key but `version_policy`, `classes` and `sha256` is a server setting of the same name
(`DECONVSEG_<KEY>`), with the same bounds; a model that leaves it out gets the server's value.
Unknown keys are refused, naming the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from app.settings import Settings

# The server settings a model may set for itself.
PER_MODEL = ("max_batch_size", "max_batch_delay_ms", "backend", "engine", "batch_forward",
             "resolution", "tile_size", "tile_overlap")
VersionPolicy = Literal["latest", "all"] | list[Annotated[int, Field(ge=1)]]


class ConfigError(ValueError):
    """A config.json that cannot be used; the message names the file and the key."""


def _optional(name: str) -> tuple[Any, Any]:
    field = Settings.model_fields[name]
    kind: Any = field.annotation
    if field.metadata:  # the bounds (ge, le, ...) travel with the type
        kind = Annotated.__class_getitem__((kind, *field.metadata))  # type: ignore[attr-defined]
    return kind | None, Field(None, description=field.description)


_Overrides: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "_Overrides", __config__=ConfigDict(extra="forbid", frozen=True),
    **{name: _optional(name) for name in PER_MODEL})


class ModelConfig(_Overrides):
    version_policy: VersionPolicy = Field(
        "latest", description="latest = the highest version only; all = every version; "
        "or a list of version numbers")
    classes: list[str] | None = Field(
        None, description="if set, every version must have exactly these classes")
    sha256: dict[int, str] | None = Field(
        None, description="version → pinned sha256 of its model.pt; a mismatch refuses it")

    def select(self, versions: set[int]) -> set[int]:
        """The versions this model's policy names, among those on disk."""
        if not versions:
            return set()
        if self.version_policy == "latest":
            return {max(versions)}
        if self.version_policy == "all":
            return set(versions)
        return versions & set(self.version_policy)


@dataclass(frozen=True)
class ServingOptions:
    """The knobs one model serves with: its config.json over the server settings."""

    max_batch_size: int
    max_batch_delay_ms: float
    backend: str
    engine: str
    batch_forward: str
    resolution: str
    tile_size: int
    tile_overlap: int

    @classmethod
    def resolve(cls, config: ModelConfig, settings: Settings) -> ServingOptions:
        values = {name: getattr(config, name) for name in PER_MODEL}
        options = cls(**{name: getattr(settings, name) if value is None else value
                         for name, value in values.items()})
        if options.tile_overlap >= options.tile_size:
            raise ConfigError(f"tile_overlap {options.tile_overlap} must be smaller than "
                              f"tile_size {options.tile_size}")
        return options


def read_config(path: Path) -> ModelConfig:
    """The model's config (defaults when the file is absent); ConfigError names what is wrong."""
    if not path.exists():
        return ModelConfig()
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    try:
        return ModelConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"][:1]) or "config"
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(ModelConfig.model_fields))
            parts.append(f"unknown key '{key}' (known keys: {known})")
        else:
            parts.append(f"{key}: {error['msg']}")
    return "; ".join(dict.fromkeys(parts))
