"""`python -m app`: check the settings and read the model repository, then serve with uvicorn.

A bad setting exits at once with status 2 and one line on stderr; a repository with no loadable
model exits with status 1 and one line per failure. A model that fails to load while others
can serve is logged and listed in GET /models. SIGTERM or
Ctrl-C drains: /readyz turns 503, requests in flight finish, queued images are computed, and the
process exits 0. If the inference worker dies, /readyz turns 503 at once and the process drains
and exits with status 3, for its supervisor (Docker's restart policy) to restart it.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from app.allocator import tune_malloc
from app.inference import DeviceUnavailable
from app.main import build_registry, create_app
from app.metrics import Metrics
from app.repository import RepositoryError
from app.settings import describe_validation_error, get_settings

log = logging.getLogger("deconvseg")


class DrainingServer(uvicorn.Server):
    """Marks the service as draining the moment a stop signal arrives, and shuts down (exit
    status 3) if the inference worker dies, so that a supervisor restarts the process."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app
        self.worker_died = False

    async def on_tick(self, counter: int) -> bool:
        failed = self.app.state.runtime.batcher.failed
        if failed is not None and not self.worker_died:
            self.worker_died = True
            log.critical("the inference worker died (%r); shutting down with exit status 3",
                         failed)
            self.should_exit = True
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.app.state.runtime.admission.draining = True
        self.app.state.registry.closing = True  # a load in progress stops at its next step
        super().handle_exit(sig, frame)


def _stopped_by_signal(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the stop signal after its graceful shutdown; that stop is a success."""
    log.info("stopped by %s", signal.Signals(signum).name)


def main() -> int:
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"deconvseg: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_malloc()  # before the model allocates: no page faults per forward (app/allocator.py)
    torch.set_num_threads(1)  # only the inference workers run OpenMP teams (app/workers.py)
    try:
        registry = build_registry(settings, Metrics())
        problems = registry.prepare()
    except (RepositoryError, DeviceUnavailable) as exc:
        print(f"deconvseg: cannot start: {exc}", file=sys.stderr)
        return 1
    if not registry.loadable:
        lines = problems or [f"{registry.source}: no model to serve"]
        print("\n".join(f"deconvseg: cannot start: {line}" for line in lines), file=sys.stderr)
        return 1
    for problem in problems:
        log.error("%s", problem)
    app = create_app(settings, registry)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            log_level=settings.log_level, lifespan="on",
                            access_log=settings.log_level == "debug",
                            timeout_graceful_shutdown=int(settings.request_timeout_s) + 1)
    server = DrainingServer(config, app)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped_by_signal)
    server.run()
    if server.worker_died:
        return 3
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
