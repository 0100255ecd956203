"""Dynamic batching: an asyncio front end feeding a pool of inference threads.

Work arrives in lanes, one per loaded model version, each with its own `predict` and batch
knobs. A batch holds items of one lane and one bucket (e.g. the same input shape) and closes when
it holds the lane's `max_batch_size` items or `max_batch_delay_s` after its first item was
queued; a worker that finds a lone item and nothing else waiting runs it at once. Items whose
deadline passed or whose caller went away are dropped before compute. If a batch raises, its
items are retried one by one so that only the item that fails gets the error. Which worker takes
a batch, and with how many threads, is `app.workers.ThreadPolicy`'s decision.

`enqueue` takes an item from any thread with a `done(result, error)` callback, which a worker
calls once (sometimes holding `_cond`, so it must not block or take a lock the enqueuing thread
holds around `enqueue`); `submit` is the same for a coroutine, whose future is only ever touched
on its event loop's thread.

Locking: `_cond` guards `_pending`, `_busy`, `_accepting`, `_stopping` and each queued item's
`started` and `abandoned`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from app.io_threads import settle as settle_future
from app.lane import (
    BatcherStopped,
    BatchStats,
    DeadlineExceeded,
    In,
    Lane,
    Out,
    QueueFull,
    Result,
)
from app.workers import ThreadPolicy, WorkerContext

__all__ = ["BatchStats", "Batcher", "BatcherStopped", "DeadlineExceeded", "Lane", "QueueFull",
           "Result"]

log = logging.getLogger("deconvseg.batcher")

Done = Callable[[Result | None, BaseException | None], None]


@dataclass(eq=False)
class _Item:
    value: Any
    lane: Lane
    key: Hashable
    done: Done  # called once, by a worker: the result, or the error
    deadline: float  # time.monotonic()
    enqueued: float = field(default_factory=time.monotonic)
    started: float = 0.0  # under _cond
    abandoned: bool = False  # under _cond


class Batcher:
    """`await submit(lane, x, timeout)` → `Result`; lanes share one queue and one worker pool."""

    def __init__(self, policy: ThreadPolicy, max_queue: int,
                 on_drop: Callable[[str], None] | None = None,
                 on_idle: Callable[[], None] | None = None, idle_s: float = 1.0) -> None:
        """`on_idle` runs once in worker 0 after `idle_s` seconds without work (e.g. handing
        freed memory back after a burst), and again only after more work."""
        if max_queue < 1:
            raise ValueError(f"max_queue must be ≥ 1, got {max_queue}")
        self.on_idle = on_idle
        self.idle_s = idle_s
        self._worked = False  # worker 0 took work since on_idle last ran (under _cond)
        self.policy = policy
        self.max_queue = max_queue
        self.on_drop = on_drop or (lambda _: None)
        self._pending: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._accepting = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._busy = 0  # workers holding a batch
        self.failed: BaseException | None = None

    @property
    def workers(self) -> int:
        return self.policy.workers

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            self._accepting, self._stopping = True, False
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"inference-worker-{i}")
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, finish everything already queued, then end the workers."""
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
    def busy(self) -> int:
        """Workers holding a batch."""
        return self._busy

    @property
    def depth(self) -> int:
        return len(self._pending)

    def wait_until_queued(self, count: int, timeout: float | None = None) -> bool:
        """Block until at least `count` items wait in the queue (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._pending) >= count, timeout)

    # --- front end ----------------------------------------------------------------------------

    def enqueue(self, lane: Lane[In, Out], value: In, deadline: float, done: Done) -> _Item:
        """Queue one item on `lane` from any thread; a worker answers `done` once. Raises
        BatcherStopped or QueueFull at once. `deadline` is on `time.monotonic()`'s clock: an
        item still queued then is answered DeadlineExceeded, not computed."""
        item = _Item(value, lane, (lane, lane.bucket(value)), done, deadline)
        with self._cond:
            if not self._accepting or not self.alive:
                raise BatcherStopped("the inference workers are not accepting work")
            if len(self._pending) >= self.max_queue:
                self.on_drop("queue_full")
                raise QueueFull(f"{self.max_queue} images are already queued")
            self._pending.append(item)
            self._cond.notify_all()
        return item

    async def submit(self, lane: Lane[In, Out], value: In, timeout_s: float) -> Result[Out]:
        """Queue one item on `lane` and wait for its result, at most `timeout_s` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()  # exists before the item is visible

        def done(result: Result | None, error: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(settle_future, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for it any more
                pass

        item = self.enqueue(lane, value, time.monotonic() + timeout_s, done)
        # One timer rather than `wait_for(shield(future))`: the same outcome, with no waiter and
        # no outer future to chain through the event loop for every image.
        timer = loop.call_later(timeout_s, self._expire, item, future, timeout_s)
        try:
            return await future
        except asyncio.CancelledError:  # the caller went away (client disconnect)
            self.abandon(item, "disconnect")
            raise
        finally:
            timer.cancel()

    def _expire(self, item: _Item, future: asyncio.Future, timeout_s: float) -> None:
        """The item's deadline, on its loop: its caller hears DeadlineExceeded now, even while a
        worker computes it, unless its result is already in."""
        if not future.done():
            self.abandon(item, "deadline")
            future.set_exception(DeadlineExceeded(f"not computed within {timeout_s:g} s"))

    def abandon(self, item: _Item, reason: str) -> None:
        """Its caller no longer wants the item (any thread): a worker skips it. It counts as
        dropped only if it never started (an item gets its result only after it starts), and
        only once."""
        with self._cond:
            counted = item.abandoned  # a worker found it late and counted it already
            item.abandoned = True
            never_started = not item.started
        if never_started and not counted:
            self.on_drop(reason)

    # --- workers ------------------------------------------------------------------------------

    def _take(self, index: int) -> tuple[list[_Item], WorkerContext] | None:
        """Block for the next batch that is still wanted; None once stopping with nothing left."""
        with self._cond:
            while True:
                while not self._pending or (not self.policy.may_take(index, self._busy)
                                            and not self._stopping):
                    if self._stopping and not self._pending:
                        return None
                    if index == 0 and self._worked and self.on_idle is not None:
                        if not self._cond.wait(self.idle_s) and not self._pending:
                            self._worked = False
                            self._cond.release()  # run it without holding the queue
                            try:
                                self.on_idle()
                            finally:
                                self._cond.acquire()
                        continue
                    self._cond.wait()
                if index == 0:
                    self._worked = True
                batch = self._gather(self._pending.popleft())
                live = self._live(batch)
                if live:
                    return live, self.policy.context(index, self._busy, len(self._pending))
                self._busy -= 1
                self._cond.notify_all()

    def _gather(self, first: _Item) -> list[_Item]:
        """`first` and its companions (same key), waiting up to the lane's delay (lock held)."""
        self._busy += 1  # claimed: the other workers may now help with what is left
        self._cond.notify_all()
        batch = [first]
        lone = not self._pending  # idle worker, nothing else waiting: run at once
        close_at = first.enqueued + first.lane.max_batch_delay_s
        while len(batch) < first.lane.max_batch_size:
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
        """Mark the batch's wanted items started; answer the late ones (lock held)."""
        now = time.monotonic()
        live = []
        for item in batch:
            if item.abandoned:
                continue  # counted as dropped by the front end
            if now > item.deadline:
                item.abandoned = True  # answered and counted here, not again by its timer
                item.done(None, DeadlineExceeded("deadline passed while queued"))
                self.on_drop("deadline")
                continue
            item.started = now
            live.append(item)
        return live

    def _run(self, index: int) -> None:
        batch: list[_Item] = []
        try:
            self.policy.enter_worker()
            while (taken := self._take(index)) is not None:
                batch, context = taken
                try:
                    settle = self._compute(batch, context)
                finally:  # free before answering, so a caller's next request finds us idle
                    with self._cond:
                        self._busy -= 1
                        self._cond.notify_all()
                settle()
                # Hold nothing while idle: an unloaded model version is freed with its last item.
                batch, taken, settle = [], None, _nothing
        except BaseException as exc:  # a worker bug: fail loudly, never look healthy
            self.failed = exc
            log.exception("inference worker died")
            with self._cond:
                self._accepting = False
                for item in [*batch, *self._pending]:  # the batch it died on, the queue
                    item.done(None, BatcherStopped("inference worker died"))
                self._pending.clear()

    def _compute(self, batch: list[_Item], context: WorkerContext) -> Callable[[], None]:
        """Predict a batch; returns the function that answers its callers."""
        lane = batch[0].lane
        t0 = time.monotonic()
        outputs: list[Any]
        errors: list[BaseException | None]
        try:
            outputs = list(lane.predict([item.value for item in batch], context))
            if len(outputs) != len(batch):
                raise RuntimeError(f"predict returned {len(outputs)} results for {len(batch)}")
            errors = [None] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                outputs, errors = [None], [exc]
            else:  # isolate the failing item(s)
                outputs, errors = [], []
                for item in batch:
                    try:
                        outputs.append(lane.predict([item.value], context)[0])
                        errors.append(None)
                    except Exception as exc:
                        outputs.append(None)
                        errors.append(exc)
        compute = time.monotonic() - t0
        lane.on_batch(BatchStats(len(batch), [it.started - it.enqueued for it in batch], compute))

        def answer() -> None:
            for item, out, err in zip(batch, outputs, errors, strict=True):
                result = None if err else Result(out, item.started - item.enqueued, compute)
                item.done(result, err)

        return answer


def _nothing() -> None:
    return None
