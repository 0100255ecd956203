"""Dynamic batching: an asyncio front end feeding a pool of inference threads (one by default).

A batch closes when it holds `max_batch_size` items of one bucket (same key, e.g. same input
shape) or `max_batch_delay_s` after its first item was queued; when the worker finds a lone item
and nothing else waiting, it runs it at once. Items whose deadline passed or whose caller went
away are dropped before compute. If a batch raises, its items are retried one by one so that only
the item that fails gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

log = logging.getLogger("deconvseg.batcher")

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The bounded queue is full; the caller should retry later."""


class DeadlineExceeded(Exception):
    """The item waited past its deadline and was not computed."""


class BatcherStopped(Exception):
    """The batcher is not accepting work (draining, stopped, or its worker died)."""


class Result(NamedTuple, Generic[Out]):
    value: Out
    queue_seconds: float  # enqueue → its batch started
    compute_seconds: float  # the whole batch's predict call


@dataclass
class BatchStats:
    batch_size: int
    queue_seconds: list[float]
    compute_seconds: float


@dataclass
class _Item(Generic[In]):
    value: In
    key: Hashable
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float
    enqueued: float = field(default_factory=time.monotonic)
    started: float = 0.0


class Batcher(Generic[In, Out]):
    """`await submit(x, timeout)` → `Result`; `predict` sees lists of same-key items."""

    def __init__(
        self,
        predict: Callable[[Sequence[In]], Sequence[Out]],
        max_batch_size: int = 8,
        max_batch_delay_s: float = 0.005,
        max_queue: int = 64,
        key: Callable[[In], Hashable] = lambda _: None,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_drop: Callable[[str], None] | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {max_batch_size}")
        if max_batch_delay_s < 0:
            raise ValueError(f"max_batch_delay_s must be ≥ 0, got {max_batch_delay_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be ≥ 1, got {max_queue}")
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_batch_delay_s = max_batch_delay_s
        self.max_queue = max_queue
        self.key = key
        self.on_batch = on_batch or (lambda _: None)
        self.on_drop = on_drop or (lambda _: None)
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._busy = 0  # workers holding a batch
        self._local = threading.local()  # .index in each worker thread
        self.failed: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._accepting, self._stopping = True, False
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"inference-worker-{i}")
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, finish everything already queued, then end the worker."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))

    @property
    def alive(self) -> bool:
        return (bool(self._threads) and all(t.is_alive() for t in self._threads)
                and self.failed is None)

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def busy(self) -> int:
        """Workers holding a batch (the caller's own included, from inside `predict`)."""
        return self._busy

    def wait_until_queued(self, count: int, timeout: float | None = None) -> bool:
        """Block until at least `count` items wait in the queue (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._pending) >= count, timeout)

    # --- front end ----------------------------------------------------------------------------

    async def submit(self, value: In, timeout_s: float) -> Result[Out]:
        """Queue one item and wait for its result, at most `timeout_s` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()  # exists before the item is visible
        item = _Item(value, self.key(value), future, loop, time.monotonic() + timeout_s)
        with self._cond:
            if not self._accepting or not self.alive:
                raise BatcherStopped("the inference worker is not accepting work")
            if len(self._pending) >= self.max_queue:
                self.on_drop("queue_full")
                raise QueueFull(f"{self.max_queue} images are already queued")
            self._pending.append(item)
            self._cond.notify_all()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            self._abandon(item, "deadline")
            raise DeadlineExceeded(f"not computed within {timeout_s:g} s") from None
        except asyncio.CancelledError:  # the caller went away (client disconnect)
            self._abandon(item, "disconnect")
            raise

    def _abandon(self, item: _Item, reason: str) -> None:
        """Cancel the item's future; the worker skips it. A drop only if it never started."""
        if item.future.cancel() and not item.started:
            self.on_drop(reason)

    # --- worker -------------------------------------------------------------------------------

    def _take_batch(self, index: int = 0) -> list[_Item] | None:
        """Block for the next batch; None once stopping with nothing left.

        Worker 0 takes work whenever it is idle; the others only while some worker is busy, so
        that light traffic always runs on the same thread. Alternating between workers cost
        ~8 ms a forward here: the idle worker's OpenMP threads still spin after their last
        forward and take a core from the other worker's team.
        """
        with self._cond:
            while not self._pending or (index > 0 and self._busy == 0 and not self._stopping):
                if self._stopping and not self._pending:
                    return None
                self._cond.wait()
            first = self._pending.popleft()
            self._busy += 1  # claimed: the other workers may now help with what is left
            self._cond.notify_all()
            batch = [first]
            lone = not self._pending  # idle worker, nothing else waiting: run at once
            close_at = first.enqueued + self.max_batch_delay_s
            while len(batch) < self.max_batch_size:
                same = next((it for it in self._pending if it.key == first.key), None)
                if same is not None:
                    self._pending.remove(same)
                    batch.append(same)
                    continue
                remaining = close_at - time.monotonic()
                if lone or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            return batch

    def _live(self, batch: list[_Item]) -> list[_Item]:
        now = time.monotonic()
        live = []
        for item in batch:
            if item.future.cancelled():
                continue  # counted as dropped by the front end
            if now > item.deadline:
                item.loop.call_soon_threadsafe(_settle, item.future, None,
                                               DeadlineExceeded("deadline passed while queued"))
                self.on_drop("deadline")
                continue
            item.started = now
            live.append(item)
        return live

    def worker_index(self) -> int:
        """The calling worker's index (0 for any other thread)."""
        return getattr(self._local, "index", 0)

    def _run(self, index: int = 0) -> None:
        self._local.index = index
        batch: list[_Item] = []
        try:
            while (batch := self._take_batch(index)) is not None:
                settle: Callable[[], None] = _nothing
                try:
                    live = self._live(batch)
                    if live:
                        settle = self._compute(live)
                finally:  # free before answering, so a caller's next request finds us idle
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()
                settle()
        except BaseException as exc:  # a worker bug: fail loudly, never look healthy
            self.failed = exc
            log.exception("inference worker died")
            with self._cond:
                self._accepting = False
                for item in [*(batch or []), *self._pending]:  # the batch it died on, the queue
                    item.loop.call_soon_threadsafe(_settle, item.future, None,
                                                   BatcherStopped("inference worker died"))
                self._pending.clear()

    def _compute(self, batch: list[_Item]) -> Callable[[], None]:
        """Predict a batch; returns the function that answers its callers."""
        t0 = time.monotonic()
        try:
            outputs: list[Any] = list(self.predict([item.value for item in batch]))
            if len(outputs) != len(batch):
                raise RuntimeError(f"predict returned {len(outputs)} results for {len(batch)}")
            errors: list[BaseException | None] = [None] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                outputs, errors = [None], [exc]
            else:  # isolate the failing item(s)
                outputs, errors = [], []
                for item in batch:
                    try:
                        outputs.append(self.predict([item.value])[0])
                        errors.append(None)
                    except Exception as exc:
                        outputs.append(None)
                        errors.append(exc)
        compute = time.monotonic() - t0
        self.on_batch(BatchStats(len(batch), [it.started - it.enqueued for it in batch], compute))

        def answer() -> None:
            for item, out, err in zip(batch, outputs, errors, strict=True):
                result = None if err else Result(out, item.started - item.enqueued, compute)
                item.loop.call_soon_threadsafe(_settle, item.future, result, err)

        return answer


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _nothing() -> None:
    return None
