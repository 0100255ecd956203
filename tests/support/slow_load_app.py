"""`python -m tests.support.slow_load_app`: the real server, except that warming up any model
version above 1 first waits SLOW_WARM_UP_S seconds (default 3), so that a test can act while a
load is in progress."""

import os
import sys
import time

from app import __main__ as entry
from app.pipeline import ModelVersion


def _slow_warm_up(self: ModelVersion, threads: int, _warm_up=ModelVersion.warm_up) -> None:
    if self.number > 1:
        time.sleep(float(os.environ.get("SLOW_WARM_UP_S", "3")))
    _warm_up(self, threads)


if __name__ == "__main__":
    ModelVersion.warm_up = _slow_warm_up  # type: ignore[method-assign]
    sys.exit(entry.main())
