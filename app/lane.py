"""What the batcher works with: lanes (one per model version), results and its refusals."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from app.workers import WorkerContext

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The bounded queue is full; the caller should retry later."""


class DeadlineExceeded(Exception):
    """The item waited past its deadline and was not computed."""


class BatcherStopped(Exception):
    """The batcher is not accepting work (draining, stopped, or a worker died)."""


class Result(NamedTuple, Generic[Out]):
    value: Out
    queue_seconds: float  # enqueue → its batch started
    compute_seconds: float  # the whole batch's predict call


@dataclass
class BatchStats:
    batch_size: int
    queue_seconds: list[float]
    compute_seconds: float


def _no_stats(_: BatchStats) -> None:
    return None


@dataclass(frozen=True, eq=False)
class Lane(Generic[In, Out]):
    """One stream of work: its predict stage and batch knobs (checked here, at construction)."""

    predict: Callable[[Sequence[In], WorkerContext], Sequence[Out]]
    max_batch_size: int  # the settings hold the defaults (one source)
    max_batch_delay_s: float
    bucket: Callable[[In], Hashable] = lambda _: None
    on_batch: Callable[[BatchStats], None] = _no_stats

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be ≥ 1, got {self.max_batch_size}")
        if self.max_batch_delay_s < 0:
            raise ValueError(f"max_batch_delay_s must be ≥ 0, got {self.max_batch_delay_s}")
