"""`python -m tests.reliability.faulty_app`: `python -m app`, except that the inference worker
dies (a BaseException escapes predict, as a fatal fault would) on any image 13 pixels wide."""

import sys

from app import __main__ as entry
from app.pipeline import ModelVersion

POISON_WIDTH = 13


class WorkerKilled(BaseException):
    """Not an Exception: the batcher's per-item isolation does not catch it."""


def _dying_predict(self, items, context, _predict=ModelVersion.predict):
    if any(item.width == POISON_WIDTH for item in items):
        raise WorkerKilled("simulated fatal fault in the inference thread")
    return _predict(self, items, context)


class DyingVersion(ModelVersion):
    """A model version whose predict kills its inference worker on a poisoned image."""

    predict = _dying_predict


if __name__ == "__main__":  # only in that process: importing this module patches nothing
    ModelVersion.predict = _dying_predict
    sys.exit(entry.main())
