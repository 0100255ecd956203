"""The registry's bookkeeping: each model's versions and the state each one is in.

Every field here is guarded by the owning Registry's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app import errors
from app.pipeline import ModelVersion
from app.repository import ModelEntry
from model.checkpoint import Checkpoint


class State(StrEnum):
    loading = "loading"
    ready = "ready"
    unloading = "unloading"
    unavailable = "unavailable"


@dataclass(eq=False)
class VersionSlot:
    number: int
    state: State = State.unavailable
    reason: str = "not loaded"
    serving: ModelVersion | None = None  # when ready
    draining: ModelVersion | None = None  # when unloading, until its last lease ends
    pending: Checkpoint | None = None  # read at start-up, built by `start`


@dataclass(eq=False)
class ModelSlot:
    name: str
    entry: ModelEntry
    versions: dict[int, VersionSlot] = field(default_factory=dict)
    loading: threading.Lock = field(default_factory=threading.Lock)

    def best(self) -> VersionSlot | None:
        """The serving version: the highest ready one."""
        ready = [v for n, v in sorted(self.versions.items()) if v.state is State.ready]
        return ready[-1] if ready else None

    def describe(self) -> str:
        if any(v.state is State.loading for v in self.versions.values()):
            return "loading; retry shortly"
        if self.entry.problems:
            return "unavailable: " + "; ".join(self.entry.problems)
        reasons = sorted({v.reason for v in self.versions.values() if v.reason})
        return "not loaded" + (f" ({'; '.join(reasons)})" if reasons else "")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model's load lock, or refuse with 409: loads and unloads never interleave."""
        if not self.loading.acquire(blocking=False):
            raise errors.Conflict("load_in_progress", f"model '{self.name}' is already being "
                                                      "loaded or unloaded; retry when it is done")
        try:
            yield
        finally:
            self.loading.release()

    @property
    def loading_any(self) -> bool:
        return any(v.state is State.loading for v in self.versions.values())

    def update(self, entry: ModelEntry) -> None:
        """Follow the folder as read now: a slot for every version on disk."""
        self.entry = entry
        for number in (*entry.versions, *entry.broken):
            self.versions.setdefault(number, VersionSlot(number))
        for number, slot in self.versions.items():
            gone = number not in entry.versions and number not in entry.broken
            if gone and slot.state is State.unavailable:
                slot.reason = "removed from the repository"

    def status(self, default: bool) -> dict[str, Any]:
        best = self.best()
        return {"name": self.name, "default": default,
                "serving_version": best.number if best else None,
                "problems": list(self.entry.problems),
                "versions": [{"version": n, "state": str(v.state),
                              **({"reason": v.reason} if v.reason else {})}
                             for n, v in sorted(self.versions.items())]}
