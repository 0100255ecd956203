"""The I/O threads: decoding and encoding run on them, off the event loop.

`run` hands a call over with one queue put and comes back with one `call_soon_threadsafe`.
`loop.run_in_executor` does the same work through a concurrent.futures Future, a work item and
a chain of callbacks between two futures. That cost the event loop 13 µs of CPU per hand-off
against 1.5 µs here, in a script of 32,000 hand-offs from 16 tasks (the event loop's CPU per
request is what issue 13's part 3 counts).

`submit` hands a call over that answers nobody: it passes its own result on. An image's decode
and encode go that way (`app.flight`: each stage hands the image to the next stage's thread);
`run` serves the routes' other work (a batch's JSON, gzip).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("deconvseg.io")
T = TypeVar("T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future | None,
             asyncio.AbstractEventLoop | None]


def settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """Give a loop's future its outcome unless it has one (it was cancelled): on the loop's
    thread, through `call_soon_threadsafe`."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class IOThreads:
    """`count` threads, started on first use, each run through `initializer` first."""

    def __init__(self, count: int, name: str = "io",
                 initializer: Callable[[], object] = lambda: None) -> None:
        self.count, self.name, self.initializer = count, name, initializer
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on an I/O thread; its result or its exception. Cancelling the caller
        leaves a call already running to finish and skips one still queued."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((fn, args, future, loop))
        return await future

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """`fn(*args)` on an I/O thread, from any thread; nobody awaits it, so `fn` passes its
        outcome on itself (an exception it lets out is logged). RuntimeError once shut down."""
        self._put((fn, args, None, None))

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the I/O threads are shut down")
            if not self._threads:
                self._start()
            self._jobs.put(job)

    def _start(self) -> None:
        for i in range(self.count):
            thread = threading.Thread(target=self._serve, name=f"{self.name}_{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        self.initializer()
        while (job := self._jobs.get()) is not None:
            self._run(*job)
            del job  # an idle thread holds no upload, image or response

    @staticmethod
    def _run(fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future | None,
             loop: asyncio.AbstractEventLoop | None) -> None:
        if future is None or loop is None:  # submitted: nobody to answer
            try:
                fn(*args)
            except Exception:
                log.exception("a call submitted to the I/O threads failed")
            return
        if future.cancelled():  # its caller went away while it waited
            return
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 (handed to the caller, as an executor does)
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, future, result, error)
        except RuntimeError:  # the loop is closed: nobody waits for it any more
            pass

    def shutdown(self) -> None:
        """Let the queued calls finish, then stop the threads (blocks; call it off the loop)."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join()
