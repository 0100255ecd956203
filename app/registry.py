"""The live model repository: which versions of which models are loaded, and swapping them
without downtime.

Each version is `loading`, `ready`, `unloading` or `unavailable` (with a reason). A request
takes a lease on one ready version (`lease`) and keeps it until its response exists, so it
finishes on the version it was admitted to. Loading a version builds, freezes and warms it in
the caller's thread while the others serve; making it ready is one step under the lock, after
which new requests go to it. Versions the policy no longer names turn `unloading` and are freed
when their last lease ends. A version that fails to load is `unavailable` with the reason, and
whatever was serving keeps serving.

Locking: `_lock` guards `_models`, every slot's fields and every ModelVersion's `leases`;
`ModelSlot.loading` keeps loads and unloads of one model from interleaving (a second is refused
with 409). Building and warming run outside `_lock`.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

import torch

from app import errors
from app.allocator import trim
from app.metrics import Metrics
from app.model_config import ServingOptions
from app.pipeline import Limits, ModelVersion
from app.repository import ModelEntry, RepositoryError, Source, read_version
from app.settings import Settings
from app.slots import ModelSlot, State, VersionSlot
from model.checkpoint import Checkpoint, CheckpointError

log = logging.getLogger("deconvseg.registry")
VersionFactory = Callable[..., ModelVersion]


class Registry:
    def __init__(self, source: Source, settings: Settings, metrics: Metrics,
                 device: torch.device, threads: int,
                 factory: VersionFactory = ModelVersion) -> None:
        self.source = source
        self.settings = settings
        self.metrics = metrics
        self.device = device
        self.threads = threads  # torch threads for warm-up
        self.factory = factory
        self.limits = Limits(settings.max_pixels, settings.max_side,
                             settings.max_probability_pixels)
        self._lock = threading.Lock()
        self._models: dict[str, ModelSlot] = {}
        self.default: str | None = None
        self.prepared = False
        self.closing = False

    # --- start-up -----------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Read the repository and the checkpoints its policies name (no building yet);
        return one line per problem. Raises RepositoryError if the repository is unreadable."""
        problems: list[str] = []
        for name in self.source.names():
            entry = self.source.read(name)
            if entry is None:
                continue
            model = self._sync(entry)
            problems += entry.problems + list(entry.broken.values())
            for number in self._wanted(entry):
                slot = model.versions[number]
                try:
                    slot.pending = self._read(entry, number)
                    slot.state, slot.reason = State.loading, ""
                except errors.LoadFailed as exc:
                    slot.reason = exc.message
                    problems.append(exc.message)
        self.default = self._choose_default()
        self.prepared = True
        return problems

    @property
    def loadable(self) -> bool:
        return any(v.pending is not None or v.state is State.ready
                   for m in self._models.values() for v in m.versions.values())

    def _choose_default(self) -> str | None:
        wanted = self.settings.default_model
        if wanted is not None:
            if wanted not in self._models:
                raise RepositoryError(f"DECONVSEG_DEFAULT_MODEL={wanted}: no such model in the "
                                      f"repository (models: {', '.join(self._models) or 'none'})")
            return wanted
        # The first by name that can serve, so that one broken folder does not hold readiness.
        serving = [m.name for m in self._models.values()
                   if any(v.pending is not None for v in m.versions.values())]
        return min(serving or self._models, default=None)

    def start(self) -> None:
        """Build and warm every version `prepare` read (blocking; run in a thread)."""
        for model in list(self._models.values()):
            for slot in list(model.versions.values()):
                if slot.pending is not None:
                    ckpt, slot.pending = slot.pending, None
                    self._finish_load(model, slot, functools.partial(_given, ckpt))

    # --- requests -----------------------------------------------------------------------------

    def lease(self, name: str | None = None, number: int | None = None) -> Lease:
        """`with` it: the version that serves this request (the model's serving version unless
        `number`), held until the block ends."""
        return Lease(self, name, number)

    def _take(self, name: str | None, number: int | None) -> ModelVersion:
        with self._lock:
            model = self._model(name)
            if number is None:
                slot = model.best()
                if slot is None:
                    raise errors.model_not_ready(model.name, model.describe(),
                                                 retry=model.loading_any)
            else:
                slot = model.versions.get(number)
                if slot is None:
                    raise errors.NotFound("version_not_found",
                                          f"model '{model.name}' has no version {number} "
                                          f"(versions: {sorted(model.versions) or 'none'})")
                if slot.state is not State.ready:
                    raise errors.model_not_ready(f"{model.name}' version '{number}",
                                                 f"{slot.state}: {slot.reason}".rstrip(": "),
                                                 retry=slot.state is State.loading)
            version = slot.serving
            assert version is not None
            version.leases += 1
            return version

    def _release(self, version: ModelVersion) -> None:
        with self._lock:
            version.leases -= 1
            slot = self._models[version.name].versions.get(version.number)
            done = version.leases == 0 and slot is not None and slot.draining is version
            if done:
                assert slot is not None
                self._unloaded(slot)
        if done:
            trim()

    def _model(self, name: str | None) -> ModelSlot:
        name = name or self.default
        if name is None or name not in self._models:
            known = ", ".join(sorted(self._models)) or "none"
            raise errors.NotFound("model_not_found", f"no model named '{name}' (models: {known})")
        return self._models[name]

    # --- model control ------------------------------------------------------------------------

    def load(self, name: str) -> dict[str, Any]:
        """Re-read the model's folder and load what its policy names, then retire the rest
        (blocking; run in a thread). Raises Conflict, NotFound or LoadFailed."""
        entry = self.source.read(name)
        if entry is None:
            raise errors.NotFound("model_not_found", f"no model folder named '{name}' in the "
                                                     "repository")
        with self._lock:
            model = self._sync(entry)
        with model.exclusive():
            return self._load(model, entry)

    def _load(self, model: ModelSlot, entry: ModelEntry) -> dict[str, Any]:
        if entry.config is None:
            raise errors.LoadFailed("load_failed", "; ".join(entry.problems))
        wanted = self._wanted(entry)
        with self._lock:
            todo = [n for n in sorted(wanted) if model.versions[n].state is not State.ready]
            held = self._held()
            limit = self.settings.max_loaded_versions
            if held + len(todo) > limit:
                raise errors.Conflict(
                    "too_many_versions", f"loading {len(todo)} more version(s) of '{model.name}' "
                    f"would hold {held + len(todo)} versions in memory; the limit is {limit} "
                    "(DECONVSEG_MAX_LOADED_VERSIONS); unload a model first")
            for number in todo:
                slot = model.versions[number]
                slot.state, slot.reason = State.loading, ""
        failures = [failure for number in todo if (failure := self._finish_load(
            model, model.versions[number], functools.partial(self._read, entry, number)))]
        if self.closing:
            raise errors.not_ready("shutting down")
        if failures:  # whatever was serving keeps serving
            raise errors.LoadFailed("load_failed", "; ".join(failures))
        with self._lock:
            for number, slot in model.versions.items():
                if number not in wanted and slot.state is State.ready:
                    self._retire(slot)
        return self.status(model.name)

    def unload(self, name: str) -> dict[str, Any]:
        """Retire every version of the model; each is freed when its last request ends."""
        with self._lock:
            model = self._model(name)
        with model.exclusive(), self._lock:
            for slot in model.versions.values():
                if slot.state is State.ready:
                    self._retire(slot)
        return self.status(name)

    def _finish_load(self, model: ModelSlot, slot: VersionSlot,
                     read: Callable[[], Checkpoint]) -> str | None:
        """Read, build and warm one version, then make it ready; the failure's text, if any."""
        try:
            version = self._build(model.name, slot.number, model.entry, read())
        except (errors.LoadFailed, errors.Unavailable) as exc:
            failure = exc.message
        except Exception as exc:  # building or warming a checkpoint that loaded
            log.exception("model %s version %d failed to build", model.name, slot.number)
            failure = (f"{model.entry.versions.get(slot.number, model.name)}: failed to build "
                       f"({type(exc).__name__}: {exc})")
        else:
            with self._lock:
                slot.state, slot.reason, slot.serving = State.ready, "", version
            self.metrics.model_ready.labels(model.name, str(slot.number)).set(1)
            self.metrics.loads.labels(model.name, "ready").inc()
            log.info("model %s version %d ready (sha256 %s…)", model.name, slot.number,
                     version.ckpt.sha256[:12])
            return None
        with self._lock:
            slot.state, slot.reason = State.unavailable, failure
        self.metrics.loads.labels(model.name, "failed").inc()
        log.error("model %s version %d unavailable: %s", model.name, slot.number, failure)
        return failure

    def _read(self, entry: ModelEntry, number: int) -> Checkpoint:
        try:
            return read_version(entry, number, self.device)
        except (CheckpointError, ValueError) as exc:
            raise errors.LoadFailed("load_failed", str(exc)) from None

    def _build(self, name: str, number: int, entry: ModelEntry, ckpt: Checkpoint
               ) -> ModelVersion:
        assert entry.config is not None
        if self.closing:
            raise errors.not_ready("shutting down")
        options = ServingOptions.resolve(entry.config, self.settings)
        version = self.factory(name, number, ckpt, options, self.device, self.limits,
                               self.metrics)
        if self.closing:
            raise errors.not_ready("shutting down")
        version.warm_up(self.threads)
        return version

    def _retire(self, slot: VersionSlot) -> None:
        """Stop routing to a ready version; free it once its last lease ends (lock held)."""
        slot.state, slot.reason = State.unloading, ""
        slot.draining, slot.serving = slot.serving, None
        assert slot.draining is not None
        self.metrics.model_ready.labels(slot.draining.name, str(slot.number)).set(0)
        if slot.draining.leases == 0:
            self._unloaded(slot)

    @staticmethod
    def _unloaded(slot: VersionSlot) -> None:
        """The draining instance's last lease ended (lock held); the slot may be loading or
        ready again by now, with a newer instance."""
        log.info("%r unloaded", slot.draining)
        slot.draining = None
        gc.unfreeze()  # app/main.py froze what start-up built, this version too: let it go
        if slot.state is State.unloading:
            slot.state, slot.reason = State.unavailable, "unloaded"

    def _held(self) -> int:
        """Versions in memory or on their way: loading, ready or draining (lock held)."""
        return sum(1 for m in self._models.values() for v in m.versions.values()
                   if v.state in (State.loading, State.ready) or v.draining is not None)

    # --- bookkeeping --------------------------------------------------------------------------

    def _wanted(self, entry: ModelEntry) -> set[int]:
        if entry.config is None:
            return set()
        return entry.config.select(set(entry.versions) | set(entry.broken))

    def _sync(self, entry: ModelEntry) -> ModelSlot:
        """The model's slot, updated to the folder as read (lock held, or start-up)."""
        model = self._models.setdefault(entry.name, ModelSlot(entry.name, entry))
        model.update(entry)
        return model

    def status(self, name: str) -> dict[str, Any]:
        """The model, its serving version and every version's state."""
        with self._lock:
            model = self._model(name)
            return model.status(default=model.name == self.default)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: one row per model version."""
        return [{"name": m["name"], **row} for name in self.names()
                for m in [self.status(name)] for row in m["versions"]]

    def serving(self, name: str | None = None) -> ModelVersion | None:
        """The model's serving version, without a lease (None when it has none)."""
        with self._lock:
            best = self._model(name).best()
            return best.serving if best else None

    def versions(self) -> list[ModelVersion]:
        """Every ready version (for readiness checks and tests)."""
        with self._lock:
            return [v.serving for m in self._models.values() for v in m.versions.values()
                    if v.serving is not None]


def _given(ckpt: Checkpoint) -> Checkpoint:
    return ckpt


class Lease:
    """A plain context manager, not a `contextlib` generator: entered on the event loop for every
    request, whose CPU per request issue 13's part 3 counts."""

    __slots__ = ("registry", "name", "number", "version")

    def __init__(self, registry: Registry, name: str | None, number: int | None) -> None:
        self.registry, self.name, self.number = registry, name, number
        self.version: ModelVersion | None = None

    def __enter__(self) -> ModelVersion:
        self.version = self.registry._take(self.name, self.number)
        return self.version

    def __exit__(self, *exc: object) -> None:
        assert self.version is not None
        self.registry._release(self.version)
