"""`python -m app`: check the settings and the checkpoint, then serve with uvicorn.

A bad setting or checkpoint exits at once (status 2 or 1) with one line on stderr. SIGTERM or
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
from app.inference import DeviceUnavailable, resolve_device
from app.main import create_app
from app.settings import describe_validation_error, get_settings
from model.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger("deconvseg")


class DrainingServer(uvicorn.Server):
    """Marks the service as draining the moment a stop signal arrives, and shuts down (exit
    status 3) if the inference worker dies, so that a supervisor restarts the process."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app
        self.worker_died = False

    async def on_tick(self, counter: int) -> bool:
        service = getattr(self.app.state, "service", None)
        if service is not None and service.batcher.failed is not None and not self.worker_died:
            self.worker_died = True
            log.critical("the inference worker died (%r); shutting down with exit status 3",
                         service.batcher.failed)
            self.should_exit = True
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        service = getattr(self.app.state, "service", None)
        if service is not None:
            service.draining = True
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
    torch.set_num_threads(1)  # only the inference workers run OpenMP teams (service.threads_for)
    try:
        checkpoint = load_checkpoint(settings.checkpoint, device=resolve_device(settings.device),
                                     expected_sha256=settings.pinned_sha256)
    except (CheckpointError, DeviceUnavailable) as exc:
        print(f"deconvseg: cannot start: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings, checkpoint)
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
