"""The inference-thread policy, in one place: which worker takes work, and with how many
torch threads it computes.

On a 2-core CPU two workers of one thread each served more images/s than one worker of two: a
team of OpenMP threads waits at every layer for its slowest member, and the decode and HTTP
work keeps preempting one of them. So:

- Worker 0 takes work whenever it is idle; the others only while some worker is busy, so that
  light traffic always runs on the same thread. Alternating between workers cost ~8 ms a
  forward here: an idle worker's OpenMP threads still spin after their last forward and take a
  core from the other worker's team.
- Worker 0 computing alone with nothing queued uses every thread (lowest latency); otherwise
  each busy worker gets an equal share (no oversubscription). Only worker 0 ever runs a
  multi-threaded team: once libgomp manages more threads than there are cores it stops
  spin-waiting between parallel regions, which made every forward ~30 % slower here.
- Every other thread (start-up, I/O, the event loop) computes single-threaded, and warm-up runs
  in a thread of its own, whose OpenMP team ends with it.
- With `nice` > 0 (`DECONVSEG_WORKER_NICE`) the inference threads run that many steps below
  the rest of the process (Linux: nice is per thread, and the OpenMP team a worker starts
  inherits it), so that the event loop's and the I/O threads' short work comes first on a
  contended core. Under a flood (`python -m bench.flood`) nice 5 lowers the 503s' p99 by
  ~10 ms but can cost goodput (README, "Reliability"), so it is off by default.

Masks are the same at any thread count (tested).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerContext:
    """Handed to `predict` with each batch: which worker runs it, and with how many threads."""

    index: int
    threads: int


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # torch threads in all
    workers: int  # inference threads taking batches
    nice: int = 0  # how much lower the inference threads' priority is than the process's

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {self.workers}")
        if self.threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {self.threads}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be in 0..19, got {self.nice}")

    def enter_worker(self) -> None:
        """Called first in each inference thread, before it starts an OpenMP team."""
        lower_priority(self.nice)

    def may_take(self, index: int, busy: int) -> bool:
        """Worker 0 always; the others only while some worker holds a batch."""
        return index == 0 or busy > 0

    def context(self, index: int, busy: int, queued: int) -> WorkerContext:
        """The threads for worker `index`'s next batch, given `busy` workers (itself included)
        and `queued` items still waiting."""
        alone = index == 0 and busy <= 1 and queued == 0
        share = self.threads if alone or self.workers == 1 else max(1, self.threads // self.workers)
        return WorkerContext(index, share)


_local = threading.local()


def lower_priority(steps: int) -> None:
    """Raise the calling thread's nice value by `steps` (no privilege needed). Linux only:
    elsewhere `setpriority` would act on the whole process, so nothing is changed."""
    if steps and sys.platform == "linux":
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))


def use_threads(count: int) -> None:
    """Torch's thread count is per calling thread (OpenMP): set this thread's on change."""
    if getattr(_local, "threads", None) != count:
        torch.set_num_threads(count)
        _local.threads = count


def in_own_thread(fn: Callable[[], T], threads: int, name: str) -> T:
    """Run `fn` with `threads` torch threads in a thread that ends afterwards (its OpenMP team
    ends with it); re-raise what it raised."""
    result: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        torch.set_num_threads(threads)
        try:
            result.append(fn())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return result[0]
