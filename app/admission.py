"""Admission, readiness and draining for the whole server, shared by every model.

Used from the event loop's thread only, so its counters need no lock. The middleware that sheds
load before a body is read gets `check` (a callable), the pipeline wraps each image in `image()`
and each request in `request()`; shutdown waits in `drained()` for the requests in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app import errors


class Admission:
    def __init__(self, capacity: int, max_queue: int,
                 on_refused: Callable[[str], None] = lambda _: None,
                 failure: Callable[[], BaseException | None] = lambda: None) -> None:
        """`capacity`: images admitted at once (decoding, queued, computing or encoding) before
        503 queue_full; `failure`: the inference workers' fatal error, if any."""
        self.capacity = capacity
        self.max_queue = max_queue
        self.on_refused = on_refused
        self.failure = failure
        self.warm = False  # start-up loads are done
        self.draining = False
        self.admitted = 0  # images inside `image()`
        self._in_flight = 0  # requests inside `request()`
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def ready(self) -> bool:
        return self.warm and not self.draining and self.failure() is None

    @property
    def state(self) -> str:
        """Why the server is not ready, in words, or "ready"."""
        if self.failure() is not None:
            return "restarting (its inference worker died)"
        if self.draining:
            return "shutting down"
        return "ready" if self.ready else "warming up"

    def check(self) -> None:
        """Raise `not_ready` or `queue_full` if an image arriving now would be refused:
        refusing before decoding keeps a 503 cheap and the wait of admitted images bounded."""
        if not self.ready:
            raise errors.not_ready(self.state)
        if self.admitted >= self.capacity:
            self.on_refused("queue_full")
            raise errors.queue_full(self.max_queue)

    def image(self) -> _Image:
        """`with` it: admit one image for the duration of its pipeline."""
        self.check()
        return _Image(self)

    def request(self) -> _Request:
        """`with` it: count a request as in flight until its response body exists."""
        return _Request(self)

    async def drained(self, timeout: float) -> int:
        """Wait up to `timeout` s for the requests in flight; return how many are left."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            pass
        return self._in_flight


# Plain classes, not `contextlib` generators: entered once or twice per request on the event
# loop, whose CPU per request is what issue 13's part 3 counts.
class _Image:
    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def __enter__(self) -> None:
        self.admission.admitted += 1

    def __exit__(self, *exc: object) -> None:
        self.admission.admitted -= 1


class _Request:
    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def __enter__(self) -> None:
        self.admission._in_flight += 1
        self.admission._idle.clear()

    def __exit__(self, *exc: object) -> None:
        self.admission._in_flight -= 1
        if not self.admission._in_flight:
            self.admission._idle.set()
