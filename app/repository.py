"""The model repository on disk, read the way Triton lays it out:

    <root>/<model>/config.json          optional, see app.model_config
    <root>/<model>/<version>/model.pt   version = a positive integer

or one checkpoint file (`DECONVSEG_CHECKPOINT`), served as a repository of one model named after
the file's stem, version 1. Reading never raises for one model's mistakes: each is a sentence in
`ModelEntry.problems` (the model) or `ModelEntry.broken` (a version folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from app.model_config import ConfigError, ModelConfig, read_config
from model.checkpoint import Checkpoint, load_checkpoint

WEIGHTS = "model.pt"
CONFIG = "config.json"


class RepositoryError(ValueError):
    """The repository itself cannot be read (missing or not a folder)."""


@dataclass
class ModelEntry:
    name: str
    versions: dict[int, Path] = field(default_factory=dict)  # number → its model.pt
    broken: dict[int, str] = field(default_factory=dict)  # number → why it cannot load
    config: ModelConfig | None = None  # None: config.json is unusable (see problems)
    problems: list[str] = field(default_factory=list)


class Source(Protocol):
    def names(self) -> list[str]: ...

    def read(self, name: str) -> ModelEntry | None: ...


def _version_number(name: str) -> int | None:
    return int(name) if name.isdigit() and not name.startswith("0") else None


class FolderRepository:
    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        if not self.root.is_dir():
            what = "does not exist" if not self.root.exists() else "is not a folder"
            raise RepositoryError(f"{self.root}: the model repository {what}")
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def read(self, name: str) -> ModelEntry | None:
        """The model's folder as it is now; None if there is no such folder."""
        folder = self.root / name
        if name.startswith(".") or "/" in name or not folder.is_dir():
            return None
        entry = ModelEntry(name)
        try:
            entry.config = read_config(folder / CONFIG)
        except ConfigError as exc:
            entry.problems.append(str(exc))
        for child in sorted(folder.iterdir()):
            if not child.is_dir() or child.name.startswith("."):
                continue
            number = _version_number(child.name)
            if number is None:
                entry.problems.append(f"{child}: version folders must be named by a positive "
                                      "integer (1, 2, ...); ignored")
            elif (child / WEIGHTS).is_file():
                entry.versions[number] = child / WEIGHTS
            else:
                entry.broken[number] = f"{child}: no {WEIGHTS} in the version folder"
        if not entry.versions and not entry.broken:
            entry.problems.append(f"{folder}: no version folders (expected "
                                  f"{folder}/<version>/{WEIGHTS})")
        return entry


class SingleCheckpoint:
    """One checkpoint file as a one-model repository (the `DECONVSEG_CHECKPOINT` shortcut)."""

    def __init__(self, path: Path, pinned_sha256: str | None = None) -> None:
        self.path = path
        self.config = ModelConfig(sha256={1: pinned_sha256} if pinned_sha256 else None)

    def names(self) -> list[str]:
        return [self.path.stem]

    def read(self, name: str) -> ModelEntry | None:
        if name != self.path.stem:
            return None
        return ModelEntry(name, versions={1: self.path}, config=self.config)


def source_for(repository: Path | None, checkpoint: Path, pinned_sha256: str | None) -> Source:
    """The repository the settings name: a folder, else the one checkpoint."""
    if repository is not None:
        return FolderRepository(repository)
    return SingleCheckpoint(checkpoint, pinned_sha256)


def read_version(entry: ModelEntry, number: int, device: torch.device) -> Checkpoint:
    """A version's checkpoint, checked against its model's config (pinned sha256, classes);
    CheckpointError or ValueError name the file and the reason."""
    if number in entry.broken:
        raise ValueError(entry.broken[number])
    path, config = entry.versions[number], entry.config
    if config is None:
        raise ValueError("; ".join(entry.problems))
    ckpt = load_checkpoint(path, device=device, expected_sha256=(config.sha256 or {}).get(number))
    if config.classes is not None and ckpt.classes != config.classes:
        raise ValueError(f"{path}: the checkpoint has {len(ckpt.classes)} classes "
                         f"{ckpt.classes}; config.json expects {len(config.classes)}: "
                         f"{config.classes}")
    return ckpt
