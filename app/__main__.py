"""`python -m app`: check settings and checkpoint, then serve with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from app.main import create_app
from app.settings import Settings, describe_validation_error
from model.checkpoint import CheckpointError, load_checkpoint


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"deconvseg: {describe_validation_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from app.inference import resolve_device

        checkpoint = load_checkpoint(settings.checkpoint, device=resolve_device(settings.device),
                                     expected_sha256=settings.checkpoint_sha256)
    except (CheckpointError, RuntimeError) as exc:
        print(f"deconvseg: cannot serve: {exc}", file=sys.stderr)
        return 1
    app = create_app(settings, checkpoint)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_timeout_s, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
