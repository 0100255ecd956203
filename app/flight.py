"""One image's trip through the threads, with one hand-back to the event loop:

    decode (I/O thread) → predict (inference worker, batched) → encode (I/O thread)

Each stage hands the image straight to the next stage's thread: the I/O thread that decoded it
enqueues it in the batcher, and the worker's answer submits the encode. The event loop hands the
upload over once and wakes once, for the outcome. Awaiting each stage instead woke the loop three
times per image, and each wake-up resumed the request's whole stack of coroutines (issue 13,
part 3: the event loop's CPU per request).

The loop keeps what is its own: the deadline (a timer) and the caller going away (cancel).

Locking: `_lock` guards `_over` and `_item` between the loop and the I/O thread that enqueues the
image. A worker's answer takes no lock (the batcher may call it holding its own); it reads
`_over` unlocked, where a stale value only means an encode that nobody awaits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from app.batcher import Batcher, BatcherStopped, DeadlineExceeded, QueueFull, Result
from app.errors import ServingError
from app.io_threads import IOThreads, settle
from app.pipeline import ModelVersion, Prediction, Segmented

T = TypeVar("T")


class PredictFailed(Exception):
    """The model's predict raised; `__cause__` is what it raised."""


# Answers, not faults: the client's upload, the queue, the shutdown. An unexpected exception keeps
# its traceback, for the log.
EXPECTED = (ServingError, QueueFull, BatcherStopped, DeadlineExceeded)


class Flight(Generic[T]):
    """`await Flight(...).run()` → the Segmented image and `encode(seg)`'s result (None without
    `encode`). Raises the stages' own errors, QueueFull, BatcherStopped, DeadlineExceeded (the
    deadline passed before predict answered) or PredictFailed."""

    def __init__(self, version: ModelVersion, data: bytes | np.ndarray, io: IOThreads,
                 batcher: Batcher, deadline_s: float,
                 encode: Callable[[Segmented], T] | None = None, keep_image: bool = False,
                 probabilities: bool = False, confidence: bool = False) -> None:
        """`deadline_s`: seconds from now for the image to be computed."""
        self.version, self.io, self.batcher, self.encode = version, io, batcher, encode
        self._data: bytes | np.ndarray | None = data
        self._keep_image, self._probabilities, self._confidence = (keep_image, probabilities,
                                                                  confidence)
        self._deadline_s = deadline_s
        self._deadline = time.monotonic() + deadline_s
        self._loop = asyncio.get_running_loop()
        # Dropped when `run` ends: an exception in it would hold `run`'s frame, and so this
        # flight, in a cycle.
        self._future: asyncio.Future[tuple[Segmented, T | None]] | None = (
            self._loop.create_future())
        self._lock = threading.Lock()
        self._over = False  # the caller went away or the deadline passed (under _lock)
        self._item: Any = None  # the batcher's item, once enqueued (under _lock)
        self._encoding = False  # predict has answered (set by the worker)
        self._image: np.ndarray | None = None
        self._decode_s = 0.0

    async def run(self) -> tuple[Segmented, T | None]:
        future = self._future
        assert future is not None, "a flight runs once"
        self.io.submit(self._decode)
        timer = self._loop.call_later(max(self._deadline_s, 0.001), self._expire)
        try:
            return await future
        except asyncio.CancelledError:  # the caller went away (client disconnect)
            with self._lock:
                self._over = True
                item = self._item
            if item is not None:
                self.batcher.abandon(item, "disconnect")
            raise
        finally:
            timer.cancel()
            with self._lock:  # the item's `done` is this flight: without this, a cycle that
                self._item = None  # kept the image, mask and body until the cycle collector ran
            self._data = self._image = self._future = None
            del future  # nor may this frame, which a raised exception's traceback holds

    # --- the loop -----------------------------------------------------------------------------

    def _expire(self) -> None:
        """The deadline: the caller hears DeadlineExceeded now unless predict has answered (an
        encode under way finishes and is sent)."""
        future = self._future
        if future is None or future.done() or self._encoding:
            return
        with self._lock:
            self._over = True
            item = self._item
        if item is not None:
            self.batcher.abandon(item, "deadline")
        else:  # still decoding: it will not be queued
            self.batcher.on_drop("deadline")
        future.set_exception(DeadlineExceeded(
            f"not computed within {self._deadline_s:g} s"))

    # --- the threads --------------------------------------------------------------------------

    def _finish(self, value: tuple[Segmented, T | None] | None,
                error: BaseException | None) -> None:
        if isinstance(error, EXPECTED):
            # No traceback: its frames would hold the upload and the decoded pixels (in a cycle
            # through this flight's future) until the cycle collector ran, for every refusal.
            error = error.with_traceback(None)
        future = self._future
        if future is None:  # `run` has ended: nobody waits for it any more
            return
        try:
            self._loop.call_soon_threadsafe(settle, future, value, error)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            pass

    def _decode(self) -> None:
        """I/O thread: decode, then queue the image for predict."""
        if self._over:
            return
        try:
            t0 = time.perf_counter()
            assert self._data is not None
            image, prepared = self.version.decode(self._data, self._probabilities,
                                                  self._confidence)
            self._decode_s = time.perf_counter() - t0
            self._data = None
            self._image = image if self._keep_image else None
            with self._lock:
                if not self._over:
                    self._item = self.batcher.enqueue(self.version.lane, prepared,
                                                      self._deadline, self._predicted)
        except Exception as exc:  # the stage's own error, QueueFull or BatcherStopped
            self._finish(None, exc)

    def _predicted(self, result: Result[Prediction] | None, error: BaseException | None
                   ) -> None:
        """Inference worker: the image's prediction, on to the encode. Never raises (it runs
        in the worker's loop)."""
        try:
            if error is not None:
                if not isinstance(error, DeadlineExceeded | BatcherStopped):
                    failed = PredictFailed(f"predict raised {type(error).__name__}")
                    failed.__cause__ = error
                    error = failed
                return self._finish(None, error)
            assert result is not None
            prediction = result.value
            seg = Segmented(self._image, prediction.mask,
                            {"decode": 0.0, "queue": round(result.queue_seconds * 1000, 3),
                             "inference": round(result.compute_seconds * 1000, 3)},
                            prediction.probabilities, prediction.confidence)
            self.version.timed(seg, "decode", self._decode_s)
            if self.encode is None or self._over:
                return self._finish((seg, None), None)
            self._encoding = True
            try:
                self.io.submit(self._encode, seg)
            except RuntimeError:
                self._finish(None, BatcherStopped("the I/O threads are shut down"))
        except Exception as exc:
            self._finish(None, exc)

    def _encode(self, seg: Segmented) -> None:
        """I/O thread: the response's body, back to the loop."""
        if self._over:
            return
        assert self.encode is not None
        try:
            self._finish((seg, self.encode(seg)), None)
        except Exception as exc:
            self._finish(None, exc)
